package kubernetes_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/kubernetes"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

func TestMain(m *testing.M) { k8stest.Main(m) }

const systemNamespace = "kuma-system"

// wipe deletes every kuma.io custom resource and control-plane Secret, so
// that the next store starts empty (all tests share one API server).
func wipe(t *testing.T, env *k8stest.Env) {
	t.Helper()
	ctx := context.Background()
	c := env.Client(t)
	env.EnsureNamespace(t, systemNamespace)
	for _, k := range v1alpha1.Kinds() {
		list := k.NewList()
		require.NoError(t, c.List(ctx, list))
		for _, o := range list.Objects() {
			if err := c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
				t.Fatalf("wipe %s %s: %v", k.Kind, o.GetName(), err)
			}
		}
	}
	require.NoError(t, c.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(systemNamespace), client.MatchingFields{"type": string(kubernetes.SecretType)}))
}

func newStore(t *testing.T) *kubernetes.Store {
	t.Helper()
	env := k8stest.Get(t)
	wipe(t, env)
	s, err := kubernetes.New(t.Context(), env.Config(), kubernetes.Options{SystemNamespace: systemNamespace})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestContract(t *testing.T) {
	storetest.RunContractWith(t, storetest.Limits{
		OpaqueVersions:    "versions are resourceVersions: etcd's revision, which every write in the cluster moves",
		NamesAcrossMeshes: "Kubernetes keys custom resources by (namespace and) name; the mesh is a field",
		LowerCaseNames:    "Kubernetes names are DNS subdomains: lower case",
		SeparateCommits:   "Kubernetes has no transactions over several objects: each is its own write",
	}, func(t *testing.T) store.Store { return newStore(t) })
}

func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(20 * time.Second):
		t.Fatal("no event")
		return store.Event{}
	}
}

// TestFeedFollowsOtherWriters: objects written by others (kubectl, the pod
// controller) reach the store's feed through its informers, in order per
// object, with their Kubernetes names as the store's view of them.
func TestFeedFollowsOtherWriters(t *testing.T) {
	s := newStore(t)
	c := k8stest.Get(t).Client(t)
	ctx := t.Context()
	ch := s.Watch(ctx)
	require.NoError(t, s.Create(ctx, storetest.Mesh("default")))
	require.Equal(t, store.Created, next(t, ch).Type)

	ns := k8stest.Get(t).Namespace(t, "apps", nil)
	dp := &v1alpha1.Dataplane{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns},
		Mesh:       "default",
		Spec:       json.RawMessage(`{"networking":{"address":"10.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}`),
	}
	require.NoError(t, c.Create(ctx, dp))
	key := resource.Key{Mesh: "default", Name: "web-1." + ns}
	require.Equal(t, store.Event{Type: store.Created, Kind: resource.KindDataplane, Key: key, Version: mustVersion(t, dp)}, next(t, ch))
	got, err := s.Get(ctx, resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.1", got.Dataplane().Networking.Address)
	require.Equal(t, map[string]string{resource.K8sNameExtension: "web-1", resource.K8sNamespaceExtension: ns}, got.Meta.NameExtensions)

	dp.Spec = json.RawMessage(`{"networking":{"address":"10.0.0.2","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}`)
	require.NoError(t, c.Update(ctx, dp))
	require.Equal(t, store.Event{Type: store.Updated, Kind: resource.KindDataplane, Key: key, Version: mustVersion(t, dp)}, next(t, ch))
	got, err = s.Get(ctx, resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.2", got.Dataplane().Networking.Address)
	require.True(t, got.Meta.ModificationTime.After(got.Meta.CreationTime) || got.Meta.ModificationTime.Equal(got.Meta.CreationTime))

	// Moving it to another mesh is another key.
	require.NoError(t, s.Create(ctx, storetest.Mesh("other")))
	require.Equal(t, store.Created, next(t, ch).Type)
	dp.Mesh = "other"
	require.NoError(t, c.Update(ctx, dp))
	require.Equal(t, store.Event{Type: store.Deleted, Kind: resource.KindDataplane, Key: key}, next(t, ch))
	otherKey := resource.Key{Mesh: "other", Name: key.Name}
	require.Equal(t, store.Event{Type: store.Created, Kind: resource.KindDataplane, Key: otherKey, Version: mustVersion(t, dp)}, next(t, ch))

	require.NoError(t, c.Delete(ctx, dp))
	require.Equal(t, store.Event{Type: store.Deleted, Kind: resource.KindDataplane, Key: otherKey}, next(t, ch))
	_, err = s.Get(ctx, resource.KindDataplane, otherKey)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func mustVersion(t *testing.T, o client.Object) int64 {
	t.Helper()
	v, err := v1alpha1.ParseVersion(o.GetResourceVersion())
	require.NoError(t, err)
	return v
}

// TestKubernetesObjects: what the store writes, as Kubernetes sees it.
func TestKubernetesObjects(t *testing.T) {
	s := newStore(t)
	c := k8stest.Get(t).Client(t)
	ctx := t.Context()
	m := storetest.Mesh("default")
	require.NoError(t, s.Create(ctx, m))

	// Secrets are Secrets of the system namespace, labelled with their mesh.
	secret := resource.NewSecret("default", "default.ca-builtin-cert-ca-1", []byte("PEM"))
	require.NoError(t, s.Create(ctx, secret))
	var sec corev1.Secret
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: "default.ca-builtin-cert-ca-1"}, &sec))
	require.Equal(t, kubernetes.SecretType, sec.Type)
	require.Equal(t, "default", sec.Labels[kubernetes.MeshLabel])
	require.Equal(t, []byte("PEM"), sec.Data[kubernetes.SecretDataKey])
	require.Equal(t, "Mesh", sec.OwnerReferences[0].Kind, "owned by its mesh, for the garbage collector")
	got, err := s.Get(ctx, resource.KindSecret, secret.Meta.Key())
	require.NoError(t, err)
	data, err := got.Secret().Bytes()
	require.NoError(t, err)
	require.Equal(t, []byte("PEM"), data)

	// A GlobalSecret is a Secret of the system namespace of its own type,
	// in no mesh, owned by nothing; it is not a Secret of any mesh.
	global := resource.NewGlobalSecret("user-token-signing-key-1", []byte("KEY"))
	require.NoError(t, s.Create(ctx, global))
	var gsec corev1.Secret
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: "user-token-signing-key-1"}, &gsec))
	require.Equal(t, kubernetes.GlobalSecretType, gsec.Type)
	require.NotContains(t, gsec.Labels, kubernetes.MeshLabel)
	require.Empty(t, gsec.OwnerReferences)
	require.Equal(t, []byte("KEY"), gsec.Data[kubernetes.SecretDataKey])
	gotGlobal, err := s.Get(ctx, resource.KindGlobalSecret, global.Meta.Key())
	require.NoError(t, err)
	gdata, err := gotGlobal.GlobalSecret().Bytes()
	require.NoError(t, err)
	require.Equal(t, []byte("KEY"), gdata)
	globals, err := s.List(ctx, resource.KindGlobalSecret, store.ListOptions{})
	require.NoError(t, err)
	require.Len(t, globals.Items, 1, "the mesh's Secret is no GlobalSecret")
	secrets, err := s.List(ctx, resource.KindSecret, store.ListOptions{})
	require.NoError(t, err)
	require.Len(t, secrets.Items, 1, "and the GlobalSecret no Secret of a mesh")
	require.ErrorIs(t, s.Create(ctx, resource.NewGlobalSecret("user-token-signing-key-1", []byte("OTHER"))), store.ErrAlreadyExists)

	// A TrafficPermission is cluster-scoped with its mesh at the top level.
	require.NoError(t, s.Create(ctx, storetest.TrafficPermission("default", "allow-all-default")))
	var tp v1alpha1.TrafficPermission
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "allow-all-default"}, &tp))
	require.Equal(t, "default", tp.Mesh)
	require.Equal(t, m.Meta.NameExtensions[resource.K8sNameExtension], tp.OwnerReferences[0].Name)

	// A Dataplane named without a namespace lives in the system namespace;
	// <name>.<namespace> in that namespace.
	require.NoError(t, s.Create(ctx, storetest.Dataplane("default", "backend-1", 1)))
	var dp v1alpha1.Dataplane
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: "backend-1"}, &dp))
	ns := k8stest.Get(t).Namespace(t, "apps", nil)
	in := storetest.Dataplane("default", "web-1."+ns, 2)
	require.NoError(t, s.Create(ctx, in))
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &dp))
	require.Equal(t, map[string]string{resource.K8sNameExtension: "web-1", resource.K8sNamespaceExtension: ns}, in.Meta.NameExtensions)

	// Its insight is owned by it.
	require.NoError(t, s.Create(ctx, storetest.Insight("default", "web-1."+ns, "s1", time.Now())))
	var insight v1alpha1.DataplaneInsight
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &insight))
	require.Equal(t, dp.UID, insight.OwnerReferences[0].UID)

	// Names the mapping refuses, namespaces that do not exist, names
	// Kubernetes refuses: clear errors, nothing written.
	err = s.Create(ctx, storetest.Dataplane("default", "web-2."+systemNamespace, 3))
	require.ErrorContains(t, err, `named without the suffix: "web-2"`)
	err = s.Create(ctx, storetest.Dataplane("default", "web-2.no-such-namespace", 3))
	require.ErrorContains(t, err, `namespaces "no-such-namespace" not found`)
	err = s.Create(ctx, storetest.Dataplane("default", "Web_2", 3))
	var ve *resource.ValidationError
	require.True(t, errors.As(err, &ve), "%v", err)
	require.Equal(t, "metadata.name", ve.Causes[0].Field)
	n, err := s.Count(ctx, resource.KindDataplane)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	// kubectl's own edits keep the control plane's annotation but date the object.
	require.NoError(t, s.Update(ctx, in))
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &dp))
	require.Contains(t, dp.Annotations, v1alpha1.ModificationTimeAnnotation)
}

// TestPingAndClose: a store answers until it is closed, then refuses.
func TestPingAndClose(t *testing.T) {
	s, err := kubernetes.New(t.Context(), k8stest.Get(t).Config(), kubernetes.Options{})
	require.NoError(t, err)
	require.NoError(t, s.Ping(t.Context()))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "closing twice is harmless")
	_, err = s.Get(t.Context(), resource.KindMesh, resource.Key{Name: "default"})
	require.ErrorIs(t, err, kubernetes.ErrClosed)
	require.ErrorIs(t, s.Create(t.Context(), storetest.Mesh("m")), kubernetes.ErrClosed)
}
