package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// clock puts Go's monotonic time and CLOCK_MONOTONIC (the timerfd's clock)
// on one time line: nanoseconds since base.
type clock struct {
	base     time.Time
	baseMono int64 // CLOCK_MONOTONIC at base, in ns
}

func newClock() clock {
	// Go's monotonic reading is CLOCK_MONOTONIC on Linux; bracket time.Now
	// between two raw readings to line both up. A bracket is only as tight
	// as the process was left running: on a busy CPU a preemption inside it
	// would shift every latency of the run (by half a time slice), so the
	// tightest of several brackets is kept.
	var best clock
	width := int64(-1)
	for range 50 {
		m1 := monotonic()
		base := time.Now()
		m2 := monotonic()
		if width < 0 || m2-m1 < width {
			best, width = clock{base: base, baseMono: m1 + (m2-m1)/2}, m2-m1
		}
		if width < 2000 { // 2 µs: no preemption inside
			break
		}
	}
	return best
}

// now returns nanoseconds since the clock's base (a vDSO read, no syscall).
func (c clock) now() int64 { return int64(time.Since(c.base)) }

func monotonic() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// ticker is a periodic timerfd read through the Go netpoller: the waiting
// goroutine parks (it holds no thread and no P) and is woken within
// microseconds of each tick. time.Sleep and time.Ticker cannot do this here:
// the runtime sleeps in epoll_pwait with millisecond timeouts, so every
// sub-millisecond wait becomes about 1 ms once the process is idle.
type ticker struct {
	f   *os.File
	buf [8]byte
}

// newTicker fires first at first (on clk's time line) and then every period.
func newTicker(clk clock, first int64, period time.Duration) (*ticker, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	spec := unix.ItimerSpec{
		Value:    unix.NsecToTimespec(clk.baseMono + first),
		Interval: unix.NsecToTimespec(int64(period)),
	}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	// A non-blocking descriptor makes os.NewFile register it with the poller.
	return &ticker{f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// wait blocks until the next tick and returns how many periods expired since
// the previous wait (more than one when the process fell behind).
func (t *ticker) wait() (uint64, error) {
	if _, err := t.f.Read(t.buf[:]); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint64(t.buf[:]), nil
}

func (t *ticker) stop() { t.f.Close() }

// cpuTime is the user+system CPU time the process has used so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
