package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mtlsMesh(name, enabled string, backends ...string) *resource.Object {
	spec := &resource.MeshSpec{MTLS: &resource.MTLS{EnabledBackend: enabled}}
	for _, b := range backends {
		spec.MTLS.Backends = append(spec.MTLS.Backends, resource.CertificateAuthorityBackend{Name: b, Type: resource.CATypeBuiltin})
	}
	o := resource.New("", name, spec)
	resource.ApplyDefaults(o)
	return o
}

func TestWorkloadCertificateIdentity(t *testing.T) {
	now := time.Now()
	caPair, err := pki.NewCA("default/ca-1", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	cert, err := IssueWorkload(caPair, Subject{
		Mesh: "default",
		Tags: map[string][]string{resource.ServiceTag: {"web", "web-admin"}, "version": {"v1"}, "team": {"a", "b"}, "kuma.io/protocol": {"http"}, "k8s.io/zone:x": {"eu:1"}},
		IPs:  []net.IP{net.ParseIP("127.0.0.2")},
	}, key.Public(), 10*time.Minute, now)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(caPair.Cert)
	_, err = cert.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	require.NoError(t, cert.Cert.VerifyHostname("127.0.0.2"))
	require.WithinDuration(t, now.Add(10*time.Minute), cert.Cert.NotAfter, time.Second)

	id, err := IdentityOf(cert.Cert)
	require.NoError(t, err)
	require.Equal(t, Identity{Mesh: "default", Tags: map[string][]string{
		resource.ServiceTag: {"web", "web-admin"}, "team": {"a", "b"}, "version": {"v1"},
		"kuma.io/protocol": {"http"}, "k8s.io/zone:x": {"eu:1"},
	}}, id)

	_, err = IssueWorkload(caPair, Subject{Mesh: "default", Tags: map[string][]string{"version": {"v1"}}}, key.Public(), time.Minute, now)
	require.ErrorContains(t, err, "kuma.io/service")
	_, err = IdentityOf(caPair.Cert)
	require.ErrorContains(t, err, "no SPIFFE identity")
}

// caWorld is a store with a manager and a running mirror of its meshes and
// secrets.
type caWorld struct {
	st  *memory.Store
	mgr *manager.Manager
	mir *mirror.Mirror
}

func newCAWorld(t *testing.T) (context.Context, *caWorld) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := memory.New()
	w := &caWorld{st: st, mgr: manager.New(st, nil), mir: mirror.New(st, nil, resource.KindMesh, resource.KindSecret)}
	done := make(chan struct{})
	go func() { defer close(done); _ = w.mir.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx, w
}

// waitView waits for a view of the store for which cond holds.
func (w *caWorld) waitView(t *testing.T, cond func(*mirror.View) bool) *mirror.View {
	t.Helper()
	var v *mirror.View
	require.Eventually(t, func() bool { v, _ = w.mir.View(); return v != nil && cond(v) }, 30*time.Second, 5*time.Millisecond)
	return v
}

func secretsOf(v *mirror.View) Secrets {
	return func(mesh, name string) *resource.Object {
		return v.Get(resource.KindSecret, resource.Key{Mesh: mesh, Name: name})
	}
}

func TestManagerKeepsCAs(t *testing.T) {
	ctx, w := newCAWorld(t)
	mgr := w.mgr
	cam := NewManager(w.mir, mgr, nil)
	go cam.Reconcile(ctx)

	_, err := mgr.Apply(ctx, mtlsMesh("default", "ca-1", "ca-1", "ca-2"), 0)
	require.NoError(t, err)
	v := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 4 })
	ca1, err := Load(secretsOf(v), "default", "ca-1")
	require.NoError(t, err)
	require.Equal(t, 2048, ca1.Cert.PublicKey.(interface{ Size() int }).Size()*8, "RSA 2048 by default")
	bundle, version := TrustBundle(secretsOf(v), "default", v.Get(resource.KindMesh, resource.Key{Name: "default"}).Mesh())
	certs, err := pki.ParseCertificates(bundle)
	require.NoError(t, err)
	require.Len(t, certs, 2, "both listed CAs are trusted")
	require.NotEmpty(t, version)

	// Switching the enabled backend keeps the CAs; the version follows the enabled one.
	_, err = mgr.Apply(ctx, mtlsMesh("default", "ca-2", "ca-1", "ca-2"), 0)
	require.NoError(t, err)
	v = w.waitView(t, func(v *mirror.View) bool {
		_, ver := TrustBundle(secretsOf(v), "default", v.Get(resource.KindMesh, resource.Key{Name: "default"}).Mesh())
		return ver != "" && ver != version
	})
	again, err := Load(secretsOf(v), "default", "ca-1")
	require.NoError(t, err)
	require.Equal(t, ca1.Cert.SerialNumber, again.Cert.SerialNumber, "an existing CA is never regenerated")

	// A backend no longer listed loses its material; mTLS off keeps nothing enabled.
	_, err = mgr.Apply(ctx, mtlsMesh("default", "ca-2", "ca-2"), 0)
	require.NoError(t, err)
	v = w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 2 })
	_, err = Load(secretsOf(v), "default", "ca-1")
	require.Error(t, err)
	require.Nil(t, Enabled(mtlsMesh("m", "", "ca-1").Mesh()))
}

// Two control planes on one store: the one whose view is stale must not
// replace the CA the other one created, and a broken leftover (a key
// without its certificate) is replaced.
func TestManagerNeverOverwritesAnotherWritersCA(t *testing.T) {
	ctx, w := newCAWorld(t)
	st, mgr, mir := w.st, w.mgr, w.mir

	_, err := mgr.Apply(ctx, mtlsMesh("default", "ca-1", "ca-1"), 0)
	require.NoError(t, err)
	stale := w.waitView(t, func(v *mirror.View) bool { return v.Get(resource.KindMesh, resource.Key{Name: "default"}) != nil })
	require.Zero(t, stale.Len(resource.KindSecret))

	first, second := NewManager(mir, mgr, nil), NewManager(mir, mgr, nil)
	require.NoError(t, first.Ensure(ctx, stale))
	created := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 2 })
	pair, err := Load(secretsOf(created), "default", "ca-1")
	require.NoError(t, err)

	err = second.Ensure(ctx, stale)
	require.ErrorIs(t, err, store.ErrAlreadyExists)
	key, err := st.Get(ctx, resource.KindSecret, resource.Key{Mesh: "default", Name: KeySecretName("default", "ca-1")})
	require.NoError(t, err)
	cert, err := st.Get(ctx, resource.KindSecret, resource.Key{Mesh: "default", Name: CertSecretName("default", "ca-1")})
	require.NoError(t, err)
	stored, err := Load(func(_, name string) *resource.Object {
		return map[string]*resource.Object{key.Meta.Name: key, cert.Meta.Name: cert}[name]
	}, "default", "ca-1")
	require.NoError(t, err)
	require.Equal(t, pair.Cert.SerialNumber, stored.Cert.SerialNumber, "the first writer's CA stays")

	// A key without its certificate is a leftover: replaced by a new pair.
	require.NoError(t, mgr.Delete(ctx, resource.KindSecret, cert.Meta.Key(), 0))
	broken := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 1 })
	require.NoError(t, second.Ensure(ctx, broken))
	repaired := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 2 })
	again, err := Load(secretsOf(repaired), "default", "ca-1")
	require.NoError(t, err)
	require.NotEqual(t, pair.Cert.SerialNumber, again.Cert.SerialNumber)
}

// Control planes racing to create one mesh's CA from the same view: the
// store's create-only writes let exactly one win, and the stored pair is
// that one's, whole (its key signs its certificate).
func TestManagersRacingCreateOneCA(t *testing.T) {
	ctx, w := newCAWorld(t)
	_, err := w.mgr.Apply(ctx, mtlsMesh("default", "ca-1", "ca-1"), 0)
	require.NoError(t, err)
	view := w.waitView(t, func(v *mirror.View) bool { return v.Get(resource.KindMesh, resource.Key{Name: "default"}) != nil })
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		m := NewManager(w.mir, w.mgr, nil)
		wg.Go(func() { errs[i] = m.Ensure(ctx, view) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
		} else {
			require.ErrorIs(t, err, store.ErrAlreadyExists)
		}
	}
	require.Equal(t, 1, won, "one CA is created")
	created := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 2 })
	_, err = Load(secretsOf(created), "default", "ca-1")
	require.NoError(t, err, "its key and certificate are one pair")
}

// A restore writes a CA's key and certificate in turn: in between, the
// complete pair is of two CAs. The manager keeps it (and reports it) instead
// of replacing it by a new CA, so the restored pair ends in place.
func TestManagerKeepsACompletePairItCannotLoad(t *testing.T) {
	ctx, w := newCAWorld(t)
	mgr := w.mgr
	_, err := mgr.Apply(ctx, mtlsMesh("default", "ca-1", "ca-1"), 0)
	require.NoError(t, err)
	cam := NewManager(w.mir, mgr, nil)
	require.NoError(t, cam.Ensure(ctx, w.waitView(t, func(v *mirror.View) bool { return v.Get(resource.KindMesh, resource.Key{Name: "default"}) != nil })))
	created := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 2 })
	own, err := Load(secretsOf(created), "default", "ca-1")
	require.NoError(t, err)

	restored, err := NewCA("default", resource.CertificateAuthorityBackend{Name: "ca-1", Type: resource.CATypeBuiltin}, time.Now())
	require.NoError(t, err)
	keyWritten, err := mgr.Apply(ctx, resource.NewSecret("default", KeySecretName("default", "ca-1"), restored.KeyPEM), 0)
	require.NoError(t, err)
	halfway := w.waitView(t, func(v *mirror.View) bool {
		s := v.Get(resource.KindSecret, resource.Key{Mesh: "default", Name: KeySecretName("default", "ca-1")})
		return s != nil && s.Meta.Version == keyWritten.Object.Meta.Version
	})
	err = cam.Ensure(ctx, halfway)
	require.ErrorContains(t, err, `the CA "ca-1" of mesh "default" is kept as it is although it does not load`)
	cert, err := w.st.Get(ctx, resource.KindSecret, resource.Key{Mesh: "default", Name: CertSecretName("default", "ca-1")})
	require.NoError(t, err)
	pem, err := cert.Secret().Bytes()
	require.NoError(t, err)
	require.Equal(t, own.CertPEM, pem, "the certificate is not replaced")
	key, err := w.st.Get(ctx, resource.KindSecret, resource.Key{Mesh: "default", Name: KeySecretName("default", "ca-1")})
	require.NoError(t, err)
	require.Equal(t, keyWritten.Object.Meta.Version, key.Meta.Version, "nor the key")

	certWritten, err := mgr.Apply(ctx, resource.NewSecret("default", CertSecretName("default", "ca-1"), restored.CertPEM), 0)
	require.NoError(t, err)
	done := w.waitView(t, func(v *mirror.View) bool {
		s := v.Get(resource.KindSecret, resource.Key{Mesh: "default", Name: CertSecretName("default", "ca-1")})
		return s != nil && s.Meta.Version == certWritten.Object.Meta.Version
	})
	require.NoError(t, cam.Ensure(ctx, done))
	now, err := Load(secretsOf(done), "default", "ca-1")
	require.NoError(t, err)
	require.Equal(t, restored.Cert.SerialNumber, now.Cert.SerialNumber, "the restored CA is in place")
}

// pausingWriter holds its writer's caller after the first write, until
// the test lets it go on.
type pausingWriter struct {
	Writer
	once           sync.Once
	wrote, goingOn chan struct{}
}

func newPausingWriter(w Writer) *pausingWriter {
	return &pausingWriter{Writer: w, wrote: make(chan struct{}), goingOn: make(chan struct{})}
}

func (p *pausingWriter) pause() {
	p.once.Do(func() { close(p.wrote); <-p.goingOn })
}

func (p *pausingWriter) Create(ctx context.Context, objs ...*resource.Object) error {
	err := p.Writer.Create(ctx, objs...)
	p.pause()
	return err
}

func (p *pausingWriter) Delete(ctx context.Context, kind resource.Kind, key resource.Key, ifVersion int64) error {
	err := p.Writer.Delete(ctx, kind, key, ifVersion)
	p.pause()
	return err
}

// Two control planes whose writes interleave: X has written part of the CA
// when Y looks, and Y's writes go between X's. The stored pair is still one
// CA (writing the key and then the certificate, X's certificate would land
// beside Y's key, a complete pair of two CAs that is then kept for good).
func TestInterleavedCAWritesLeaveOneWholePair(t *testing.T) {
	ctx, w := newCAWorld(t)
	_, err := w.mgr.Apply(ctx, mtlsMesh("default", "ca-1", "ca-1"), 0)
	require.NoError(t, err)
	empty := w.waitView(t, func(v *mirror.View) bool { return v.Get(resource.KindMesh, resource.Key{Name: "default"}) != nil })
	wx, wy := newPausingWriter(w.mgr), newPausingWriter(w.mgr)
	x, y := NewManager(w.mir, wx, nil), NewManager(w.mir, wy, nil)
	xDone, yDone := make(chan error, 1), make(chan error, 1)
	go func() { xDone <- x.Ensure(ctx, empty) }()
	<-wx.wrote
	seen := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) > 0 })
	go func() { yDone <- y.Ensure(ctx, seen) }()
	var yErr error
	yFinished := false
	select {
	case <-wy.wrote: // Y wrote too: X goes on first
	case yErr = <-yDone:
		yFinished = true
	}
	close(wx.goingOn)
	xErr := <-xDone
	close(wy.goingOn)
	if !yFinished {
		yErr = <-yDone
	}
	t.Log("X:", xErr, "Y:", yErr)
	final := w.waitView(t, func(v *mirror.View) bool { return v.Len(resource.KindSecret) == 2 })
	_, err = Load(secretsOf(final), "default", "ca-1")
	require.NoError(t, err, "the stored key and certificate are one CA")
}
