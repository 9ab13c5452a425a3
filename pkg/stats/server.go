package stats

import (
	"math"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// ServerStats are the proxy-wide statistics: server.* / envoy_server_* and
// control_plane.connected_state / envoy_control_plane_connected_state.
type ServerStats struct {
	scope      *Scope
	start      time.Time
	now        func() time.Time
	certExpiry atomic.Int64 // unix seconds of the first expiring certificate; 0 = none known

	// Live is 1 while the proxy is not draining (set to 1 at creation).
	Live *Gauge
	// ControlPlaneConnectedState is 1 while the config stream is up (0 at
	// creation).
	ControlPlaneConnectedState *Gauge
}

// NewServerStats registers and publishes the server statistics; start is
// the process start time for server.uptime. Memory figures come from
// runtime/metrics at render time: memory_allocated is the bytes of live heap
// objects, memory_heap_size the heap memory mapped and not returned to the
// OS (objects + unused + free).
func NewServerStats(s *Store, start time.Time) *ServerStats {
	sc := s.NewScope()
	ss := &ServerStats{scope: sc, start: start, now: time.Now}
	ss.Live = sc.Gauge(Opts{Name: "server.live", Family: "envoy_server_live",
		Help: "1 if the server is not currently draining, 0 otherwise."})
	sc.GaugeFunc(Opts{Name: "server.uptime", Family: "envoy_server_uptime",
		Help: "Current server uptime in seconds."}, ss.uptime)
	sc.GaugeFunc(Opts{Name: "server.memory_allocated", Family: "envoy_server_memory_allocated",
		Help: "Current amount of allocated memory in bytes."}, memoryAllocated)
	sc.GaugeFunc(Opts{Name: "server.memory_heap_size", Family: "envoy_server_memory_heap_size",
		Help: "Current reserved heap size in bytes."}, memoryHeapSize)
	sc.GaugeFunc(Opts{Name: "server.days_until_first_cert_expiring", Family: "envoy_server_days_until_first_cert_expiring",
		Help: "Number of days until the next certificate being managed will expire."}, ss.daysUntilFirstCertExpiring)
	ss.ControlPlaneConnectedState = sc.Gauge(Opts{Name: "control_plane.connected_state", Family: "envoy_control_plane_connected_state",
		Help: "Boolean (1 for connected and 0 for disconnected) that indicates the current connection state with the management server."})
	sc.Publish()
	ss.Live.Set(1)
	ss.ControlPlaneConnectedState.Set(0)
	return ss
}

// SetLive sets server.live (false while draining).
func (ss *ServerStats) SetLive(live bool) { ss.Live.Set(b2i(live)) }

// SetControlPlaneConnected sets control_plane.connected_state.
func (ss *ServerStats) SetControlPlaneConnected(up bool) {
	ss.ControlPlaneConnectedState.Set(b2i(up))
}

// SetFirstCertExpiry records when the first of the proxy's certificates
// expires; server.days_until_first_cert_expiring is computed from it at
// render time. The zero time means no certificate: the gauge then reads
// 4294967295, as Envoy reports when it manages no certificate.
func (ss *ServerStats) SetFirstCertExpiry(notAfter time.Time) {
	if notAfter.IsZero() {
		ss.certExpiry.Store(0)
		return
	}
	ss.certExpiry.Store(max(notAfter.Unix(), 1))
}

// Release removes the statistics from the store.
func (ss *ServerStats) Release() { ss.scope.Release() }

func (ss *ServerStats) uptime() int64 {
	return int64(ss.now().Sub(ss.start) / time.Second)
}

func (ss *ServerStats) daysUntilFirstCertExpiring() int64 {
	exp := ss.certExpiry.Load()
	if exp == 0 {
		return math.MaxUint32
	}
	left := time.Unix(exp, 0).Sub(ss.now())
	if left <= 0 {
		return 0
	}
	return int64(left / (24 * time.Hour))
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

const (
	heapObjectsMetric = "/memory/classes/heap/objects:bytes"
	heapUnusedMetric  = "/memory/classes/heap/unused:bytes"
	heapFreeMetric    = "/memory/classes/heap/free:bytes"
)

// memSamples recycles runtime/metrics sample slices so that concurrent
// renders neither share nor allocate them.
var memSamples = sync.Pool{New: func() any {
	s := []metrics.Sample{{Name: heapObjectsMetric}, {Name: heapUnusedMetric}, {Name: heapFreeMetric}}
	return &s
}}

func readMem(all bool) int64 {
	sp := memSamples.Get().(*[]metrics.Sample)
	s := *sp
	if !all {
		s = s[:1]
	}
	metrics.Read(s)
	var total uint64
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			total += s[i].Value.Uint64()
		}
	}
	memSamples.Put(sp)
	return int64(min(total, math.MaxInt64))
}

func memoryAllocated() int64 { return readMem(false) }

func memoryHeapSize() int64 { return readMem(true) }
