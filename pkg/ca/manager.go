package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Views gives the current view of the store and a signal of its next change.
type Views = mirror.Views

// Writer writes resources (the manager).
type Writer interface {
	// Create creates every object in one transaction, or none.
	Create(ctx context.Context, objs ...*resource.Object) error
	Delete(ctx context.Context, kind resource.Kind, key resource.Key, ifVersion int64) error
}

// Manager keeps the builtin CAs of every mesh in the store: it creates the
// material of each builtin backend a mesh lists and deletes the material of
// backends it no longer lists.
type Manager struct {
	views  Views
	writer Writer
	log    *slog.Logger
	now    func() time.Time
}

// NewManager returns a manager; Reconcile runs it.
func NewManager(views Views, writer Writer, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{views: views, writer: writer, log: log, now: time.Now}
}

// Reconcile brings the CAs in line with the meshes whenever the store
// changes, until ctx is done. A failed write is retried at the next change
// or after a short delay.
func (m *Manager) Reconcile(ctx context.Context) {
	retry := make(chan struct{}, 1)
	mirror.Follow(ctx, m.views, retry, 20*time.Millisecond, func(view *mirror.View) {
		if err := m.Ensure(ctx, view); err != nil && ctx.Err() == nil {
			if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
				// Another control plane wrote first: its CA is taken.
				m.log.Info("the mesh CAs changed while being written; following the store", "err", err)
			} else {
				m.log.Error("keeping the mesh CAs failed; retrying", "err", err)
			}
			time.AfterFunc(2*time.Second, func() {
				select {
				case retry <- struct{}{}:
				default:
				}
			})
		}
	})
}

// Ensure creates missing CAs and removes unlisted ones, for the state in
// view. A CA whose key or certificate is missing (a leftover of a crash
// between the two writes) is replaced by a new pair; a complete pair is
// never replaced.
func (m *Manager) Ensure(ctx context.Context, view *mirror.View) error {
	secrets := func(mesh, name string) *resource.Object {
		return view.Get(resource.KindSecret, resource.Key{Mesh: mesh, Name: name})
	}
	var errs []error
	listed := map[resource.Key]bool{}
	for _, mo := range view.List(resource.KindMesh, "") {
		mesh := mo.Meta.Name
		for _, b := range Builtins(mo.Mesh()) {
			certName, keyName := CertSecretName(mesh, b.Name), KeySecretName(mesh, b.Name)
			listed[resource.Key{Mesh: mesh, Name: certName}] = true
			listed[resource.Key{Mesh: mesh, Name: keyName}] = true
			_, err := Load(secrets, mesh, b.Name)
			if err == nil {
				continue
			}
			if secrets(mesh, certName) != nil && secrets(mesh, keyName) != nil {
				// A complete pair is never replaced, even one that does not
				// load: a restore (`kumactl apply` of an export) writes the
				// key and the certificate in turn, and in between they are
				// of two CAs. A pair broken for good is the user's to fix.
				errs = append(errs, fmt.Errorf("the CA %q of mesh %q is kept as it is although it does not load (fix or delete its Secrets %q and %q): %w", b.Name, mesh, keyName, certName, err))
				continue
			}
			if err := m.create(ctx, mesh, b, secrets); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, s := range view.List(resource.KindSecret, "") {
		k := s.Meta.Key()
		if strings.HasPrefix(k.Name, k.Mesh+".ca-builtin-") && !listed[k] {
			err := m.writer.Delete(ctx, resource.KindSecret, k, s.Meta.Version)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			m.log.Info("removed the material of a CA the mesh no longer lists", "mesh", k.Mesh, "secret", k.Name)
		}
	}
	return errors.Join(errs...)
}

// create writes a new CA pair for backend b of mesh: its key and its
// certificate in one store transaction, so that no control plane ever sees
// one without the other and a pair another control plane writes meanwhile
// makes the write fail whole (store.ErrAlreadyExists), never a pair of two
// CAs. A leftover half pair (from a crash of an older version, or a deleted
// Secret) goes first, each delete conditional on the version the view showed.
func (m *Manager) create(ctx context.Context, mesh string, b resource.CertificateAuthorityBackend, secrets Secrets) error {
	began := m.now()
	pair, err := NewCA(mesh, b, began)
	if err != nil {
		return err
	}
	key := resource.NewSecret(mesh, KeySecretName(mesh, b.Name), pair.KeyPEM)
	cert := resource.NewSecret(mesh, CertSecretName(mesh, b.Name), pair.CertPEM)
	for _, s := range []*resource.Object{key, cert} {
		if seen := secrets(mesh, s.Meta.Name); seen != nil {
			if err := m.writer.Delete(ctx, resource.KindSecret, seen.Meta.Key(), seen.Meta.Version); err != nil {
				return fmt.Errorf("replacing the incomplete CA %q of mesh %q: %w", b.Name, mesh, err)
			}
		}
	}
	if err := m.writer.Create(ctx, key, cert); err != nil {
		return fmt.Errorf("writing the CA %q of mesh %q: %w", b.Name, mesh, err)
	}
	m.log.Info("created a builtin CA", "mesh", mesh, "backend", b.Name, "took", m.now().Sub(began).Round(time.Millisecond))
	return nil
}
