package controlplane_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/pgtest"
	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/postgres"
)

// Two control planes on one PostgreSQL database, as kuma-cp runs them:
// one leads (the advisory lock), the other takes over when it stops; a mesh
// created through the one that does not lead gets exactly one CA; a proxy
// with a token of one connects to the other with the first one's CA file.
func TestTwoReplicasOnPostgreSQL(t *testing.T) {
	srv := pgtest.Start(t)
	db := srv.CreateDB(t)
	conn, err := pgx.ParseConfig(srv.DSN(db))
	require.NoError(t, err)
	_, err = postgres.Migrate(t.Context(), conn)
	require.NoError(t, err)
	config := func() cpconfig.Config {
		cfg := replicaConfig(t, t.TempDir())
		cfg.Store.Type = cpconfig.StorePostgres
		pc := &cfg.Store.Postgres
		pc.Host, pc.Port, pc.User, pc.Password, pc.DBName = srv.Host, uint32(srv.Port), pgtest.User, pgtest.Password, db
		pc.TLS.Mode = cpconfig.PostgresTLSDisable
		require.NoError(t, cfg.Validate())
		return cfg
	}
	cfgA := config()
	a := startReplica(t, cfgA)
	b := startReplica(t, config())

	// Exactly one leads.
	var leader, other *running
	eventually(t, "one leader", func() error {
		la, _ := leaderMetrics(t, a)
		lb, _ := leaderMetrics(t, b)
		switch {
		case la == "1" && lb == "0":
			leader, other = a, b
		case la == "0" && lb == "1":
			leader, other = b, a
		default:
			return fmt.Errorf("leader metrics: A %q, B %q", la, lb)
		}
		return nil
	})
	requireLeading(t, other, false)
	st := leader.cp.Store()
	eventually(t, "the default mesh", func() error {
		_, err := st.Get(t.Context(), resource.KindMesh, resource.Key{Name: resource.DefaultMesh})
		return err
	})

	// A mesh created through the replica that does not lead: one CA.
	other.put(t, "/meshes/m1", mtlsMesh("m1"))
	want := []string{ca.CertSecretName("m1", "ca-1"), ca.KeySecretName("m1", "ca-1")}
	eventually(t, "m1's CA", func() error {
		if got := caSecrets(t, st, "m1"); !sameSet(got, want) {
			return fmt.Errorf("secrets %v", got)
		}
		return nil
	})
	res, err := st.List(t.Context(), resource.KindSecret, store.ListOptions{Mesh: "m1"})
	require.NoError(t, err)
	_, err = ca.Load(func(_, name string) *resource.Object {
		for _, o := range res.Items {
			if o.Meta.Name == name {
				return o
			}
		}
		return nil
	}, "m1", "ca-1")
	require.NoError(t, err, "one whole CA")

	// A's token and A's CA file work on B.
	connectProxy(t, b, filepath.Join(cfgA.General.WorkDir, dpconfig.ServerCAFile), a.dataplaneToken(t))
	requireStatus(t, a, apiclient.StatusOnline)

	// The leader stops: the other takes over.
	leader.stop()
	requireLeading(t, other, true)
}
