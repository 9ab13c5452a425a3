package dpauth_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/dpserver/dpservertest"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/dpauth"
	"github.com/kumametrics/mesh/pkg/kumadp"
	"github.com/kumametrics/mesh/pkg/kumadp/kumadptest"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/kubernetes"
)

func TestMain(m *testing.M) { k8stest.Main(m) }

// cluster is a namespace of the test's API server with what the tests
// create in it.
type cluster struct {
	t   *testing.T
	env *k8stest.Env
	c   client.Client
	ns  string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	env := k8stest.Get(t)
	return &cluster{t: t, env: env, c: env.Client(t), ns: env.Namespace(t, "dpauth", nil)}
}

func (k *cluster) serviceAccount(ns, name string) {
	k.t.Helper()
	require.NoError(k.t, k.c.Create(k.t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}))
}

// pod creates a Pod running as ServiceAccount sa ("" leaves it unset: the
// namespace's default).
func (k *cluster) pod(name, sa string) *corev1.Pod {
	k.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: name},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	require.NoError(k.t, k.c.Create(k.t.Context(), p))
	return p
}

// dataplane creates the Dataplane of a Pod as the pod controller does:
// named after it, controlled by it (owner nil: controlled by nothing), at
// a fresh loopback address, which it returns.
func (k *cluster) dataplane(name, mesh string, owner *corev1.Pod) string {
	k.t.Helper()
	addr := loopback.Host()
	dp := &v1alpha1.Dataplane{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: name},
		Mesh:       mesh,
		Spec:       json.RawMessage(`{"networking":{"address":"` + addr + `","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}`),
	}
	if owner != nil {
		yes := true
		dp.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: owner.Name, UID: owner.UID, Controller: &yes, BlockOwnerDeletion: &yes}}
	}
	require.NoError(k.t, k.c.Create(k.t.Context(), dp))
	return addr
}

// token asks the TokenRequest API for a token of ServiceAccount ns/sa,
// bound to pod when not nil (as the kubelet's projected token is).
func (k *cluster) token(ns, sa string, pod *corev1.Pod) string {
	k.t.Helper()
	tr := &authenticationv1.TokenRequest{}
	if pod != nil {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	require.NoError(k.t, k.c.SubResource("token").Create(k.t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}, tr))
	require.NotEmpty(k.t, tr.Status.Token)
	return tr.Status.Token
}

// reviews creates TokenReviews through the API server's client and counts
// them.
type reviews struct {
	client.Client
	mu    sync.Mutex
	count int
}

func (r *reviews) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if _, ok := obj.(*authenticationv1.TokenReview); ok {
		r.mu.Lock()
		r.count++
		r.mu.Unlock()
	}
	return r.Client.Create(ctx, obj, opts...)
}

func (r *reviews) n() int { r.mu.Lock(); defer r.mu.Unlock(); return r.count }

func (k *cluster) authenticator(configure func(*dpauth.Options)) (*dpauth.Authenticator, *reviews) {
	k.t.Helper()
	rv := &reviews{Client: k.c}
	opts := dpauth.Options{Reviews: rv, Reader: k.c, Names: v1alpha1.Names{SystemNamespace: "kuma-system"}}
	if configure != nil {
		configure(&opts)
	}
	a, err := dpauth.New(opts)
	require.NoError(k.t, err)
	return a, rv
}

func (k *cluster) key(pod string) resource.Key {
	return resource.Key{Mesh: "default", Name: pod + "." + k.ns}
}

// refusal asserts that err is a dataplane server refusal.
func refusal(t *testing.T, err error, code codes.Code, reason, msg string) {
	t.Helper()
	var r *dpserver.Refusal
	require.ErrorAs(t, err, &r)
	require.Equal(t, code, r.Code, r.Msg)
	require.Equal(t, reason, r.Reason, r.Msg)
	require.Contains(t, r.Msg, msg)
}

// TestServiceAccountTokens against a real API server: the token of the
// ServiceAccount of the Pod that controls a Dataplane stands for it;
// nothing else does.
func TestServiceAccountTokens(t *testing.T) {
	k := newCluster(t)
	k.serviceAccount(k.ns, "web")
	k.serviceAccount(k.ns, "db")
	k.serviceAccount(k.ns, "default")
	web1 := k.pod("web-1", "web")
	web2 := k.pod("web-2", "web")
	db1 := k.pod("db-1", "db")
	plain := k.pod("plain-1", "")
	k.dataplane("web-1", "default", web1)
	k.dataplane("db-1", "default", db1)
	k.dataplane("plain-1", "default", plain)
	k.dataplane("orphan", "default", nil)
	k.dataplane("demo-1", "demo", web1)
	other := k.ns + "-other"
	require.NoError(t, k.c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}))
	k.serviceAccount(other, "web")

	a, _ := k.authenticator(nil)
	webToken := k.token(k.ns, "web", nil)
	ok := []struct {
		name, token string
		key         resource.Key
	}{
		{"the Pod's ServiceAccount", webToken, k.key("web-1")},
		{"the projected token bound to the Pod", k.token(k.ns, "web", web1), k.key("web-1")},
		{"the namespace's default ServiceAccount of a Pod naming none", k.token(k.ns, "default", nil), k.key("plain-1")},
		{"another mesh", webToken, resource.Key{Mesh: "demo", Name: "demo-1." + k.ns}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			admit, err := a.Authenticate(t.Context(), tc.token, tc.key)
			require.NoError(t, err)
			require.NoError(t, admit(nil, dpserver.Serve))
			require.NoError(t, admit(nil, dpserver.Certify))
			for _, use := range []dpserver.Use{dpserver.Present, dpserver.Replace} {
				refusal(t, admit(nil, use), codes.PermissionDenied, dpserver.ReasonWrongDataplane,
					"on Kubernetes the pod controller makes a Pod's Dataplane; a proxy presents none (run kuma-dp with --name and --mesh)")
			}
		})
	}

	refused := []struct {
		name, token string
		key         resource.Key
		code        codes.Code
		reason, msg string
	}{
		{"another ServiceAccount's token", k.token(k.ns, "db", nil), k.key("web-1"), codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"its Pod web-1 runs as ServiceAccount web, but the token is of ServiceAccount " + k.ns + "/db"},
		{"a Dataplane of a Pod of another ServiceAccount", webToken, k.key("db-1"), codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"its Pod db-1 runs as ServiceAccount db, but the token is of ServiceAccount " + k.ns + "/web"},
		{"a token bound to another Pod of the ServiceAccount", k.token(k.ns, "web", web2), k.key("web-1"), codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"the token of ServiceAccount " + k.ns + "/web is bound to Pod web-2, not to web-1, which owns the Dataplane"},
		{"a ServiceAccount of another namespace", k.token(other, "web", nil), k.key("web-1"), codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"its Dataplane is in namespace " + k.ns + ", but the token is of ServiceAccount " + other + "/web"},
		{"garbage", "x.y.z", k.key("web-1"), codes.Unauthenticated, dpserver.ReasonInvalidToken,
			"the Kubernetes API server does not accept the token ("},
		{"no token", "", k.key("web-1"), codes.Unauthenticated, dpserver.ReasonNoToken,
			"the Pod's ServiceAccount token is required (kuma-dp --dataplane-token-file /var/run/secrets/kubernetes.io/serviceaccount/token)"},
		{"no Dataplane yet", webToken, k.key("web-2"), codes.NotFound, dpserver.ReasonDataplaneNotFound,
			"there is no Dataplane web-2 in namespace " + k.ns + " yet"},
		{"a Dataplane no Pod controls", webToken, k.key("orphan"), codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"the Dataplane orphan in namespace " + k.ns + " is not controlled by a Pod"},
		{"the wrong mesh", webToken, resource.Key{Mesh: "demo", Name: "web-1." + k.ns}, codes.PermissionDenied, dpserver.ReasonWrongDataplane,
			`is in mesh "default", not "demo"`},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			admit, err := a.Authenticate(t.Context(), tc.token, tc.key)
			require.Nil(t, admit)
			refusal(t, err, tc.code, tc.reason, "dataplane "+tc.key.String()+": ")
			refusal(t, err, tc.code, tc.reason, tc.msg)
		})
	}

	// The Pod is replaced by one of the same name: the old Dataplane does
	// not stand for it until the pod controller remakes it.
	require.NoError(t, k.c.Delete(t.Context(), web2))
	k.dataplane("web-2", "default", web2)
	k.pod("web-2", "web")
	_, err := a.Authenticate(t.Context(), webToken, k.key("web-2"))
	refusal(t, err, codes.NotFound, dpserver.ReasonDataplaneNotFound, "the Pod web-2 that owned it was replaced")
	require.NoError(t, k.c.Delete(t.Context(), db1))
	_, err = a.Authenticate(t.Context(), k.token(k.ns, "db", nil), k.key("db-1"))
	refusal(t, err, codes.NotFound, dpserver.ReasonDataplaneNotFound, "the Pod db-1 that owns it is gone")
}

// TestReviewsAreCached: the API server is asked once per token while the
// answer lasts, for refusals too; the cache is bounded.
func TestReviewsAreCached(t *testing.T) {
	k := newCluster(t)
	k.serviceAccount(k.ns, "web")
	web1 := k.pod("web-1", "web")
	k.dataplane("web-1", "default", web1)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	a, rv := k.authenticator(func(o *dpauth.Options) { o.CacheSize = 2; o.CacheTTL = time.Minute; o.Now = clock })
	key := k.key("web-1")
	tokens := []string{k.token(k.ns, "web", nil), k.token(k.ns, "web", web1), k.token(k.ns, "web", nil)}
	auth := func(token string) {
		t.Helper()
		_, err := a.Authenticate(t.Context(), token, key)
		require.NoError(t, err)
	}

	for range 5 {
		auth(tokens[0])
	}
	require.Equal(t, 1, rv.n(), "one review while the answer lasts")
	auth(tokens[1])
	auth(tokens[2])
	require.Equal(t, 3, rv.n())
	auth(tokens[2])
	auth(tokens[1])
	require.Equal(t, 3, rv.n())
	auth(tokens[0])
	require.Equal(t, 4, rv.n(), "evicted: the cache keeps two answers")

	advance(time.Minute)
	auth(tokens[0])
	require.Equal(t, 5, rv.n(), "an answer lasts CacheTTL")

	// A refusal is kept 5 s: a proxy retrying with a bad token does not
	// cost a review per attempt.
	for range 3 {
		_, err := a.Authenticate(t.Context(), "x.y.z", key)
		refusal(t, err, codes.Unauthenticated, dpserver.ReasonInvalidToken, "does not accept the token")
	}
	require.Equal(t, 6, rv.n())
	advance(5 * time.Second)
	_, err := a.Authenticate(t.Context(), "x.y.z", key)
	refusal(t, err, codes.Unauthenticated, dpserver.ReasonInvalidToken, "does not accept the token")
	require.Equal(t, 7, rv.n())

	// A token longer than any the API server issues is refused unasked.
	_, err = a.Authenticate(t.Context(), string(make([]byte, 17<<10)), key)
	refusal(t, err, codes.Unauthenticated, dpserver.ReasonInvalidToken, "longer than")
	require.Equal(t, 7, rv.n())
}

// TestAudiences: with Audiences set, only tokens issued for one of them are
// accepted; the default ServiceAccount token (the API server's audience) is
// accepted by default.
func TestAudiences(t *testing.T) {
	k := newCluster(t)
	k.serviceAccount(k.ns, "web")
	web1 := k.pod("web-1", "web")
	k.dataplane("web-1", "default", web1)
	forCP := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"kuma-cp"}}}
	require.NoError(t, k.c.SubResource("token").Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: "web"}}, forCP))
	apiToken := k.token(k.ns, "web", web1)

	def, _ := k.authenticator(nil)
	_, err := def.Authenticate(t.Context(), apiToken, k.key("web-1"))
	require.NoError(t, err)
	_, err = def.Authenticate(t.Context(), forCP.Status.Token, k.key("web-1"))
	refusal(t, err, codes.Unauthenticated, dpserver.ReasonInvalidToken, "does not accept the token")

	cp, _ := k.authenticator(func(o *dpauth.Options) { o.Audiences = []string{"kuma-cp"} })
	_, err = cp.Authenticate(t.Context(), forCP.Status.Token, k.key("web-1"))
	require.NoError(t, err)
	_, err = cp.Authenticate(t.Context(), apiToken, k.key("web-1"))
	refusal(t, err, codes.Unauthenticated, dpserver.ReasonInvalidToken, "does not accept the token")
}

// TestKumaDPWithItsServiceAccountToken: kuma-dp --name <pod>.<namespace>
// --mesh default with its Pod's projected token file and no Dataplane gets
// the config of the Pod's Dataplane from a dataplane server on the
// Kubernetes store that serves the store's Dataplanes and authenticates
// with this package; a proxy presenting another ServiceAccount's token is
// refused.
func TestKumaDPWithItsServiceAccountToken(t *testing.T) {
	k := newCluster(t)
	k.serviceAccount(k.ns, "web")
	k.serviceAccount(k.ns, "db")
	web1 := k.pod("web-1", "web")
	host := k.dataplane("web-1", "default", web1)
	a, _ := k.authenticator(nil)
	st, err := kubernetes.New(t.Context(), k.env.Config(), kubernetes.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	srv := dpservertest.Start(t, st, func(o *dpserver.Options) {
		o.Dataplanes, o.Writer, o.Authenticator = dpserver.FromStore, nil, a
	})
	key := k.key("web-1")

	run := func(token string) *kumadptest.Proxy {
		t.Helper()
		file := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(file, []byte(token), 0o600))
		return kumadptest.Run(t, kumadp.Config{CPAddress: "https://" + srv.Addr, CACertFile: srv.CAFile,
			Name: key.Name, Mesh: key.Mesh, Token: token, TokenFile: file,
			AdminAddress: "127.0.0.1:0", DrainTimeout: time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	}

	other := run(k.token(k.ns, "db", nil))
	require.Eventually(t, func() bool { return srv.Refused(t, dpserver.ReasonWrongServiceAccount) >= 1 }, 30*time.Second, 10*time.Millisecond)
	cfg, _ := other.Current()
	require.Nil(t, cfg, "refused: no config")

	own := run(k.token(k.ns, "web", web1))
	require.Eventually(t, func() bool { cfg, _ := own.Current(); return cfg != nil }, 30*time.Second, 10*time.Millisecond)
	cfg, _ = own.Current()
	require.Equal(t, key.Name, cfg.GetName())
	require.Len(t, cfg.GetInbounds(), 1)
	require.Equal(t, host, cfg.GetInbounds()[0].GetAddress())
	cfg, _ = other.Current()
	require.Nil(t, cfg, "still refused")
	// Its subscription is recorded beside the Dataplane, in its namespace.
	require.Eventually(t, func() bool {
		in, err := st.Get(t.Context(), resource.KindDataplaneInsight, key)
		if err != nil {
			return false
		}
		l := in.DataplaneInsight().Latest()
		return l != nil && l.DisconnectTime == nil
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, k.c.Get(t.Context(), client.ObjectKey{Namespace: k.ns, Name: "web-1"}, &v1alpha1.DataplaneInsight{}))
}
