// Package dpauth authenticates data plane proxies on Kubernetes by their
// Pod's ServiceAccount token: the API server reviews the token
// (TokenReview), and its ServiceAccount must be the one of the Pod that
// controls the Dataplane the proxy asks for (a token bound to a Pod must be
// bound to that Pod). It is the dataplane server's Authenticator in
// Kubernetes mode (docs/2026-12-06-kubernetes-dataplane-authentication.md).
package dpauth

import (
	"context"
	"errors"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"google.golang.org/grpc/codes"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// TokenFile is where a Pod's ServiceAccount token is mounted, kept current
// by the kubelet: what kuma-dp presents (--dataplane-token-file).
const TokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Extra keys of a TokenReview's user for a token bound to a Pod.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Defaults of Options.
const (
	// DefaultCacheTTL is how long the API server's answer about a token is
	// used: a revoked token (its ServiceAccount deleted) is accepted that
	// long still; the Pod and Dataplane are checked at every call.
	DefaultCacheTTL = time.Minute
	// DefaultCacheSize bounds the tokens whose answer is kept.
	DefaultCacheSize = 4096
	// refusedTTL bounds how long a refusal of the API server is kept, so
	// that a proxy retrying with a bad token costs one review per 5 s.
	refusedTTL = 5 * time.Second
	// maxTokenBytes bounds a token sent to the API server.
	maxTokenBytes = 16 << 10
)

// Creator creates objects in the API: TokenReviews (a controller-runtime
// client.Client is one; never a cache).
type Creator interface {
	Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error
}

// Options configure an Authenticator.
type Options struct {
	// Reviews creates the TokenReviews.
	Reviews Creator
	// Reader reads Dataplanes (kuma.io/v1alpha1) and Pods: kuma-cp's
	// informer cache, or the API.
	Reader client.Reader
	// Names maps a dataplane's name (<pod>.<namespace>) to its custom
	// resource.
	Names v1alpha1.Names
	// Audiences the token must be issued for; empty: the API server's own,
	// those of the ServiceAccount token every Pod gets
	// (TokenFile), which is what the reference system accepts.
	Audiences []string
	// CacheTTL (default DefaultCacheTTL) and CacheSize (default
	// DefaultCacheSize) of the reviews' answers.
	CacheTTL  time.Duration
	CacheSize int
	// Now is the clock (time.Now by default).
	Now func() time.Time
}

// Authenticator is the dataplane server's Authenticator on Kubernetes.
type Authenticator struct {
	opts  Options
	cache *reviewCache
}

// New returns an Authenticator.
func New(opts Options) (*Authenticator, error) {
	if opts.Reviews == nil || opts.Reader == nil {
		return nil, errors.New("dpauth: Reviews and Reader are required")
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Authenticator{opts: opts, cache: newReviewCache(opts.CacheSize, opts.Now)}, nil
}

// identity is who the API server says presents a token.
type identity struct {
	// authenticated is false when the API server refused the token; why
	// says why, as far as it tells.
	authenticated bool
	why           string
	username      string
	// pod and podUID name the Pod a bound token is bound to.
	pod, podUID string
}

// review asks the API server who presents token (or the cache).
func (a *Authenticator) review(ctx context.Context, token string) (identity, error) {
	return a.cache.get(ctx, token, func(ctx context.Context) (identity, time.Time, error) {
		tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: a.opts.Audiences}}
		if err := a.opts.Reviews.Create(ctx, tr); err != nil {
			return identity{}, time.Time{}, fmt.Errorf("TokenReview: %w", err)
		}
		now := a.opts.Now()
		st := tr.Status
		if !st.Authenticated {
			why := st.Error
			if why == "" {
				why = "not authenticated"
			}
			return identity{why: why}, now.Add(min(refusedTTL, a.opts.CacheTTL)), nil
		}
		if len(a.opts.Audiences) > 0 && !intersects(st.Audiences, a.opts.Audiences) {
			return identity{why: fmt.Sprintf("the token is for audiences %q, not %q", st.Audiences, a.opts.Audiences)},
				now.Add(min(refusedTTL, a.opts.CacheTTL)), nil
		}
		id := identity{authenticated: true, username: st.User.Username}
		if v := st.User.Extra[extraPodName]; len(v) == 1 {
			id.pod = v[0]
		}
		if v := st.User.Extra[extraPodUID]; len(v) == 1 {
			id.podUID = v[0]
		}
		until := now.Add(a.opts.CacheTTL)
		// Never past the token's own expiry (read, unverified, only to
		// shorten the time its answer is kept).
		if sa, err := authn.InspectServiceAccountToken(token); err == nil && !sa.ExpiresAt.IsZero() && sa.ExpiresAt.Before(until) {
			until = sa.ExpiresAt
		}
		return id, until, nil
	})
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// refuse builds a refusal of the dataplane server.
func refuse(code codes.Code, reason, format string, args ...any) error {
	return &dpserver.Refusal{Code: code, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Authenticate implements dpserver.Authenticator: token must be, as the API
// server says, of the ServiceAccount of the Pod that controls the Dataplane
// key (and, when bound to a Pod, bound to that one). The proxy may then be
// served and certified for the stored Dataplane; it may never present one.
func (a *Authenticator) Authenticate(ctx context.Context, token string, key resource.Key) (dpserver.Admit, error) {
	const presentToken = "kuma-dp --dataplane-token-file " + TokenFile
	if token == "" {
		return nil, refuse(codes.Unauthenticated, dpserver.ReasonNoToken,
			"dataplane %s: the Pod's ServiceAccount token is required (%s)", key, presentToken)
	}
	if len(token) > maxTokenBytes {
		return nil, refuse(codes.Unauthenticated, dpserver.ReasonInvalidToken,
			"dataplane %s: the token is longer than %d bytes; the proxy presents its Pod's ServiceAccount token (%s)", key, maxTokenBytes, presentToken)
	}
	id, err := a.review(ctx, token)
	if err != nil {
		return nil, err
	}
	if !id.authenticated {
		return nil, refuse(codes.Unauthenticated, dpserver.ReasonInvalidToken,
			"dataplane %s: the Kubernetes API server does not accept the token (%s); the proxy presents its Pod's ServiceAccount token (%s)",
			key, id.why, presentToken)
	}
	saNamespace, sa, ok := authn.ServiceAccountUser(id.username)
	if !ok {
		return nil, refuse(codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"dataplane %s: the token authenticates %q, not a ServiceAccount; the proxy presents its Pod's ServiceAccount token (%s)",
			key, id.username, presentToken)
	}
	if err := a.owned(ctx, key, saNamespace, sa, id); err != nil {
		return nil, err
	}
	return func(_ *resource.Object, use dpserver.Use) error {
		if use == dpserver.Present || use == dpserver.Replace {
			return refuse(codes.PermissionDenied, dpserver.ReasonWrongDataplane,
				"dataplane %s: on Kubernetes the pod controller makes a Pod's Dataplane; a proxy presents none (run kuma-dp with --name and --mesh)", key)
		}
		return nil
	}, nil
}

// owned checks that the Dataplane key is controlled by a Pod that runs as
// ServiceAccount namespace/sa (and is the Pod a bound token names).
func (a *Authenticator) owned(ctx context.Context, key resource.Key, namespace, sa string, id identity) error {
	tokenOf := fmt.Sprintf("ServiceAccount %s/%s", namespace, sa)
	name, dpNamespace, err := a.opts.Names.Split(key.Name)
	if err != nil {
		return refuse(codes.PermissionDenied, dpserver.ReasonWrongDataplane, "dataplane %s: %v", key, err)
	}
	if dpNamespace != namespace {
		return refuse(codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"dataplane %s: its Dataplane is in namespace %s, but the token is of %s; the proxy presents its own Pod's ServiceAccount token",
			key, dpNamespace, tokenOf)
	}
	dp := &v1alpha1.Dataplane{}
	if err := a.opts.Reader.Get(ctx, client.ObjectKey{Namespace: dpNamespace, Name: name}, dp); err != nil {
		if apierrors.IsNotFound(err) {
			return refuse(codes.NotFound, dpserver.ReasonDataplaneNotFound,
				"dataplane %s: there is no Dataplane %s in namespace %s yet (the pod controller makes it once the Pod has an IP); the proxy retries",
				key, name, dpNamespace)
		}
		return fmt.Errorf("reading Dataplane %s/%s: %w", dpNamespace, name, err)
	}
	if mesh := dp.Mesh; mesh != key.Mesh {
		return refuse(codes.PermissionDenied, dpserver.ReasonWrongDataplane,
			"dataplane %s: the Dataplane %s in namespace %s is in mesh %q, not %q (kuma-dp --mesh)", key, name, dpNamespace, mesh, key.Mesh)
	}
	owner := metav1.GetControllerOf(dp)
	if owner == nil || owner.Kind != "Pod" || owner.APIVersion != "v1" {
		return refuse(codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"dataplane %s: the Dataplane %s in namespace %s is not controlled by a Pod, so no ServiceAccount token stands for it", key, name, dpNamespace)
	}
	pod := &corev1.Pod{}
	if err := a.opts.Reader.Get(ctx, client.ObjectKey{Namespace: dpNamespace, Name: owner.Name}, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return refuse(codes.NotFound, dpserver.ReasonDataplaneNotFound,
				"dataplane %s: the Pod %s that owns it is gone; the proxy retries", key, owner.Name)
		}
		return fmt.Errorf("reading Pod %s/%s: %w", dpNamespace, owner.Name, err)
	}
	if pod.UID != owner.UID {
		return refuse(codes.NotFound, dpserver.ReasonDataplaneNotFound,
			"dataplane %s: the Pod %s that owned it was replaced and its Dataplane is not remade yet; the proxy retries", key, owner.Name)
	}
	podSA := pod.Spec.ServiceAccountName
	if podSA == "" {
		podSA = "default"
	}
	if podSA != sa {
		return refuse(codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"dataplane %s: its Pod %s runs as ServiceAccount %s, but the token is of %s; the proxy presents its own Pod's ServiceAccount token",
			key, pod.Name, podSA, tokenOf)
	}
	if id.pod != "" && (id.pod != pod.Name || (id.podUID != "" && id.podUID != string(pod.UID))) {
		return refuse(codes.PermissionDenied, dpserver.ReasonWrongServiceAccount,
			"dataplane %s: the token of %s is bound to Pod %s, not to %s, which owns the Dataplane", key, tokenOf, id.pod, pod.Name)
	}
	return nil
}

// NewForConfig returns the Authenticator of a control plane on the API
// server of cfg: TokenReviews and reads of Pods and Dataplanes go to the API
// server (which serves them from its watch cache); names maps dataplane
// names to custom resources (the store's).
func NewForConfig(cfg *rest.Config, names v1alpha1.Names) (*Authenticator, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, authenticationv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("dpauth: scheme: %w", err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("dpauth: client for %s: %w", cfg.Host, err)
	}
	return New(Options{Reviews: c, Reader: c, Names: names})
}
