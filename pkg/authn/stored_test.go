package authn_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

func storedSecret(t *testing.T, st *memory.Store, name string) []byte {
	t.Helper()
	o, err := st.Get(t.Context(), resource.KindGlobalSecret, resource.Key{Name: name})
	require.NoError(t, err)
	b, err := o.GlobalSecret().Bytes()
	require.NoError(t, err)
	return b
}

// Two control planes on one store share their keys: a token one issues
// verifies on the other; the admin token is issued once and written to
// both work directories.
func TestStoredKeysAreSharedByTheReplicas(t *testing.T) {
	st := memory.New()
	dirA, dirB := t.TempDir(), t.TempDir()
	a, loadedA, err := authn.LoadStored(t.Context(), st, dirA, nil)
	require.NoError(t, err)
	require.True(t, loadedA.AdminTokenIssued)
	require.True(t, loadedA.AdminTokenWritten)
	require.Empty(t, loadedA.Migrated)
	b, loadedB, err := authn.LoadStored(t.Context(), st, dirB, nil)
	require.NoError(t, err)
	require.False(t, loadedB.AdminTokenIssued, "issued once for the whole control plane")
	require.True(t, loadedB.AdminTokenWritten, "every work directory gets it")

	dp, err := a.IssueDataplane("default", "web-1", map[string][]string{"kuma.io/service": {"web"}}, 0)
	require.NoError(t, err)
	_, err = b.VerifyDataplaneFor(dp, "default", "web-1")
	require.NoError(t, err, "a dataplane token of A verifies on B")
	user, err := b.IssueUser("john", []string{"team-a"}, 0)
	require.NoError(t, err)
	u, err := a.VerifyUser(user)
	require.NoError(t, err, "a user token of B verifies on A")
	require.Equal(t, "john", u.Name)

	tokenA, err := os.ReadFile(authn.AdminTokenPath(dirA))
	require.NoError(t, err)
	tokenB, err := os.ReadFile(authn.AdminTokenPath(dirB))
	require.NoError(t, err)
	require.Equal(t, tokenA, tokenB)
	require.Equal(t, tokenA, storedSecret(t, st, authn.AdminTokenSecret))
	admin, err := b.VerifyUser(string(tokenA[:len(tokenA)-1]))
	require.NoError(t, err)
	require.True(t, admin.IsAdmin())
	// Each work directory keeps a copy of the store's keys: a control
	// plane restarted on an empty (memory) store keeps its tokens valid.
	restarted, _, err := authn.LoadStored(t.Context(), memory.New(), dirB, nil)
	require.NoError(t, err)
	_, err = restarted.VerifyDataplaneFor(dp, "default", "web-1")
	require.NoError(t, err)
	// A stale copy is replaced by the store's key.
	require.NoError(t, os.WriteFile(filepath.Join(dirA, authn.DataplaneSigningKeyFile), []byte("c3RhbGU=\n"), 0o600))
	_, _, err = authn.LoadStored(t.Context(), st, dirA, nil)
	require.NoError(t, err)
	again, err := authn.Load(dirA, nil)
	require.NoError(t, err)
	_, err = again.VerifyDataplaneFor(dp, "default", "web-1")
	require.NoError(t, err)

	// A deleted admin token file comes back at the next start.
	require.NoError(t, os.Remove(authn.AdminTokenPath(dirB)))
	_, loaded, err := authn.LoadStored(t.Context(), st, dirB, nil)
	require.NoError(t, err)
	require.True(t, loaded.AdminTokenWritten)
	require.FileExists(t, authn.AdminTokenPath(dirB))
	// So does the store's after another one (a restore into the store).
	require.NoError(t, os.WriteFile(authn.AdminTokenPath(dirB), []byte("another\n"), 0o600))
	_, loaded, err = authn.LoadStored(t.Context(), st, dirB, nil)
	require.NoError(t, err)
	require.True(t, loaded.AdminTokenWritten)
	rewritten, err := os.ReadFile(authn.AdminTokenPath(dirB))
	require.NoError(t, err)
	require.Equal(t, tokenA, rewritten)
}

// Replicas starting at once on an empty store agree on one key of each
// kind and one admin token: the first Create wins, the others read it.
func TestStoredKeysRace(t *testing.T) {
	st := memory.New()
	const n = 8
	issuers := make([]*authn.Issuer, n)
	issued := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		dir := t.TempDir()
		wg.Go(func() {
			iss, loaded, err := authn.LoadStored(t.Context(), st, dir, nil)
			if err != nil {
				t.Error(err)
				return
			}
			issuers[i], issued[i] = iss, loaded.AdminTokenIssued
		})
	}
	wg.Wait()
	count := 0
	for i, iss := range issuers {
		require.NotNil(t, iss)
		if issued[i] {
			count++
		}
		dp, err := iss.IssueDataplane("default", "web-1", map[string][]string{"kuma.io/service": {"web"}}, 0)
		require.NoError(t, err)
		user, err := iss.IssueUser("u", nil, 0)
		require.NoError(t, err)
		for _, other := range issuers {
			_, err := other.VerifyDataplaneFor(dp, "default", "web-1")
			require.NoError(t, err)
			_, err = other.VerifyUser(user)
			require.NoError(t, err)
		}
	}
	require.Equal(t, 1, count, "one admin token")
}

// A control plane that kept its keys in files moves them into the store
// on upgrade: tokens issued before keep verifying, on every replica.
func TestStoredKeysMigrateFromTheWorkDirectory(t *testing.T) {
	dir := t.TempDir()
	old, err := authn.Load(dir, nil)
	require.NoError(t, err)
	dp, err := old.IssueDataplane("default", "web-1", map[string][]string{"kuma.io/service": {"web"}}, 0)
	require.NoError(t, err)
	adminFile, err := os.ReadFile(authn.AdminTokenPath(dir))
	require.NoError(t, err)

	st := memory.New()
	iss, loaded, err := authn.LoadStored(t.Context(), st, dir, nil)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{authn.UserSigningKeyFile, authn.DataplaneSigningKeyFile}, loaded.Migrated)
	require.False(t, loaded.AdminTokenIssued, "the admin token of the files is kept, not issued again")
	require.False(t, loaded.AdminTokenWritten)
	_, err = iss.VerifyDataplaneFor(dp, "default", "web-1")
	require.NoError(t, err, "a token issued before the upgrade verifies")
	require.Equal(t, adminFile, storedSecret(t, st, authn.AdminTokenSecret))

	other, _, err := authn.LoadStored(t.Context(), st, t.TempDir(), nil)
	require.NoError(t, err)
	_, err = other.VerifyDataplaneFor(dp, "default", "web-1")
	require.NoError(t, err, "and on a replica started later")
	_, err = other.VerifyUser(string(adminFile[:len(adminFile)-1]))
	require.NoError(t, err, "the old admin token is every replica's")
}

// An admin token deleted before the upgrade is not issued again.
func TestStoredKeysMigrationKeepsADeletedAdminTokenDeleted(t *testing.T) {
	dir := t.TempDir()
	_, err := authn.Load(dir, nil)
	require.NoError(t, err)
	require.NoError(t, os.Remove(authn.AdminTokenPath(dir)))
	st := memory.New()
	_, loaded, err := authn.LoadStored(t.Context(), st, dir, nil)
	require.NoError(t, err)
	require.False(t, loaded.AdminTokenIssued)
	require.NoFileExists(t, authn.AdminTokenPath(dir))
	_, err = st.Get(t.Context(), resource.KindGlobalSecret, resource.Key{Name: authn.AdminTokenSecret})
	require.Error(t, err)
}

// A corrupt stored key is an error that names it, never a new key.
func TestStoredKeyCorrupt(t *testing.T) {
	st := memory.New()
	require.NoError(t, st.Create(t.Context(), resource.NewGlobalSecret(authn.DataplaneSigningKeySecret, []byte("short"))))
	_, _, err := authn.LoadStored(t.Context(), st, t.TempDir(), nil)
	require.ErrorContains(t, err, authn.DataplaneSigningKeySecret)
	require.ErrorContains(t, err, "corrupt")
}
