package kumadp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// DefaultTokenPollInterval is how often kuma-dp re-reads its token file.
const DefaultTokenPollInterval = 5 * time.Second

// tokenSource holds the proxy's token: a dataplane token, or on Kubernetes
// the Pod's ServiceAccount token. It is the per-RPC
// credentials of every call to the control plane, which read the current
// token; when the token comes from a file, run re-reads the file every poll
// interval and the next call uses a changed token (rotation without a
// restart). It publishes the token's expiry and whether the control plane
// refuses it as statistics, and says at once when the token is expired.
type tokenSource struct {
	file string
	poll time.Duration
	key  resource.Key
	// dp is the Dataplane the proxy presents; nil when the control plane
	// stores it.
	dp  *resource.Object
	log *slog.Logger
	now func() time.Time

	token atomic.Pointer[string]
	// serviceAccount is whether the current token is a Kubernetes
	// ServiceAccount token (used by run and fix).
	serviceAccount atomic.Bool
	// expires is the token's exp in unix seconds; 0 when it never expires
	// or cannot be read.
	expires atomic.Int64
	// changed carries a signal when run loaded a new token.
	changed chan struct{}
	refused *stats.Gauge

	// Used by run only.
	expiredLogged bool
	readErr       string
}

// newTokenSource starts with token (may be empty: no credentials) for the
// dataplane key, presenting dp (nil: none), and registers the
// dataplane_token.* statistics in st.
func newTokenSource(token, file string, poll time.Duration, key resource.Key, dp *resource.Object, st *stats.Store, log *slog.Logger) *tokenSource {
	if poll <= 0 {
		poll = DefaultTokenPollInterval
	}
	t := &tokenSource{file: file, poll: poll, key: key, dp: dp, log: log, now: time.Now, changed: make(chan struct{}, 1)}
	sc := st.NewScope()
	sc.GaugeFunc(stats.Opts{Name: "dataplane_token.expiration_timestamp_seconds", Family: "kuma_dp_dataplane_token_expiration_timestamp_seconds",
		Help: "When the dataplane token (or ServiceAccount token) expires, in seconds since the epoch (its exp claim); 0 when it never expires or cannot be read."},
		t.expires.Load)
	sc.GaugeFunc(stats.Opts{Name: "dataplane_token.expired", Family: "kuma_dp_dataplane_token_expired",
		Help: "1 when the dataplane token is past its expiry: the control plane refuses it from the next connection on."},
		t.expiredGauge)
	t.refused = sc.Gauge(stats.Opts{Name: "dataplane_token.refused", Family: "kuma_dp_dataplane_token_refused",
		Help: "1 while the control plane refuses this proxy (its dataplane token, or a Dataplane the token does not allow)."})
	sc.Publish()
	t.set(token)
	return t
}

// current is the token the next call sends.
func (t *tokenSource) current() string {
	if p := t.token.Load(); p != nil {
		return *p
	}
	return ""
}

// set makes token current and says what it allows.
func (t *tokenSource) set(token string) {
	t.token.Store(&token)
	t.expires.Store(0)
	t.serviceAccount.Store(false)
	t.expiredLogged = false
	if token == "" {
		return
	}
	id, err := authn.InspectDataplaneToken(token)
	if err != nil {
		sa, saErr := authn.InspectServiceAccountToken(token)
		if saErr != nil {
			t.log.Warn("the dataplane token cannot be read (nor as a Kubernetes ServiceAccount token); the control plane will refuse it",
				"err", err, "as_service_account_token", saErr)
			return
		}
		t.setServiceAccount(sa)
		return
	}
	t.setExpiry(id.ExpiresAt)
	t.log.Info("dataplane token loaded", "expires", expiry(id.ExpiresAt), "tags", id.Tags)
	var inbounds []map[string]string
	if t.dp != nil {
		if n := t.dp.Dataplane().Networking; n != nil {
			for _, in := range n.Inbound {
				inbounds = append(inbounds, in.Tags)
			}
		}
	}
	err = id.CheckInbounds(inbounds, false)
	switch {
	case id.Mesh != t.key.Mesh || id.Name != t.key.Name:
		t.log.Warn("the dataplane token is for another dataplane: the control plane will refuse it",
			"token_mesh", id.Mesh, "token_name", id.Name, "fix", "use the token issued for this dataplane: kumactl generate dataplane-token --mesh "+t.key.Mesh+" --name "+t.key.Name)
	case errors.Is(err, authn.ErrUntagged):
		services := "SERVICE"
		if t.dp != nil {
			services = strings.Join(t.dp.Dataplane().Services(), ",")
		}
		t.log.Warn("the dataplane token does not name the services this proxy may serve: control planes refuse it "+
			"unless they accept untagged tokens (dpServer.authn.dpProxy.dpToken.allowUntaggedTokens)",
			"fix", "kumactl generate dataplane-token --mesh "+t.key.Mesh+" --name "+t.key.Name+" --tag "+authn.ServiceTag+"="+services)
	case err != nil:
		t.log.Warn("the dataplane token does not allow this Dataplane: the control plane will refuse it", "err", err)
	}
	t.checkExpiry()
}

// setServiceAccount takes a Kubernetes ServiceAccount token. The control
// plane accepts it for the Dataplane <pod>.<namespace> when the Pod that
// owns it runs as that ServiceAccount; what can be seen here is said.
func (t *tokenSource) setServiceAccount(sa authn.ServiceAccountToken) {
	t.serviceAccount.Store(true)
	t.setExpiry(sa.ExpiresAt)
	t.log.Info("Kubernetes ServiceAccount token loaded", "namespace", sa.Namespace, "service_account", sa.ServiceAccount,
		"pod", sa.Pod, "expires", expiry(sa.ExpiresAt))
	switch {
	// A name without a dot is in the control plane's namespace, which the
	// proxy does not know.
	case strings.Contains(t.key.Name, ".") && !strings.HasSuffix(t.key.Name, "."+sa.Namespace):
		t.log.Warn("the ServiceAccount token is of another namespace than the dataplane <pod>.<namespace>: the control plane will refuse it",
			"token_namespace", sa.Namespace, "dataplane", t.key.Name)
	case sa.Pod != "" && t.key.Name != sa.Pod+"."+sa.Namespace:
		t.log.Warn("the ServiceAccount token is bound to another Pod than the dataplane's: the control plane will refuse it",
			"token_pod", sa.Pod, "dataplane", t.key.Name)
	}
	t.checkExpiry()
}

func (t *tokenSource) setExpiry(at time.Time) {
	if !at.IsZero() {
		t.expires.Store(max(at.Unix(), 1))
	}
}

// expiry renders an exp for logs.
func expiry(at time.Time) string {
	if at.IsZero() {
		return "never"
	}
	return at.UTC().Format(time.RFC3339)
}

func (t *tokenSource) expiredGauge() int64 {
	if exp := t.expires.Load(); exp != 0 && t.now().Unix() >= exp {
		return 1
	}
	return 0
}

// checkExpiry logs once per token that it expired.
func (t *tokenSource) checkExpiry() {
	exp := t.expires.Load()
	if exp == 0 || t.now().Unix() < exp || t.expiredLogged {
		return
	}
	t.expiredLogged = true
	t.log.Error("the dataplane token expired: the control plane refuses it from the next connection on",
		"expired_at", time.Unix(exp, 0).UTC().Format(time.RFC3339), "fix", t.fix())
}

// fix says how to give the proxy another token.
func (t *tokenSource) fix() string {
	if t.serviceAccount.Load() {
		return "the control plane accepts the token of the ServiceAccount of the Pod that owns the Dataplane " + t.key.Name +
			" (its spec.serviceAccountName); the kubelet keeps the projected token file current"
	}
	issue := "kumactl generate dataplane-token --mesh " + t.key.Mesh + " --name " + t.key.Name
	if t.file != "" {
		return fmt.Sprintf("write a token the control plane accepts (%s) to %s: kuma-dp re-reads it within %s, no restart needed", issue, t.file, t.poll)
	}
	return "restart kuma-dp with a token the control plane accepts (" + issue + "); with --dataplane-token-file it picks up a new token without a restart"
}

// setRefused records whether the control plane refuses the proxy.
func (t *tokenSource) setRefused(refused bool) {
	if refused {
		t.refused.Set(1)
	} else {
		t.refused.Set(0)
	}
}

// run re-reads the token file (if any) and checks the expiry every poll
// interval until ctx is done.
func (t *tokenSource) run(ctx context.Context) {
	tick := time.NewTicker(t.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if t.file != "" {
			t.reload()
		}
		t.checkExpiry()
	}
}

// reload reads the token file; a changed token becomes current. A file that
// cannot be read or is empty keeps the current token (said once).
func (t *tokenSource) reload() {
	b, err := os.ReadFile(t.file)
	token := strings.TrimSpace(string(b))
	if err == nil && token == "" {
		err = errors.New("the file is empty")
	}
	if err != nil {
		if msg := err.Error(); msg != t.readErr {
			t.readErr = msg
			t.log.Warn("cannot read the dataplane token file; the current token stays in use", "file", t.file, "err", err)
		}
		return
	}
	t.readErr = ""
	if token == t.current() {
		return
	}
	t.log.Info("the dataplane token file changed; the next call to the control plane uses the new token", "file", t.file)
	t.set(token)
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// GetRequestMetadata implements credentials.PerRPCCredentials: the current
// token as a bearer token, nothing without one.
func (t *tokenSource) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	token := t.current()
	if token == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the
// token goes over TLS only.
func (*tokenSource) RequireTransportSecurity() bool { return true }
