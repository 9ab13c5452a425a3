package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

func query(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT 41 + 1").Scan(&n))
	return n
}

// A shared server gives each test a fresh database; a server of the test's
// own stops and restarts on its address with its data.
func TestSharedAndRestart(t *testing.T) {
	s := Shared(t)
	db := s.CreateDB(t)
	require.Equal(t, 42, query(t, s.DSN(db)))
	require.NotEqual(t, db, s.CreateDB(t))

	own := Start(t)
	require.NotEqual(t, s.Host, own.Host)
	db = own.CreateDB(t)
	own.Exec(t, db, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
	own.Stop()
	_, err := pgx.Connect(t.Context(), own.DSN(db))
	require.Error(t, err, "stopped")
	require.NoError(t, own.Restart())
	conn, err := pgx.Connect(t.Context(), own.DSN(db))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT n FROM kept").Scan(&n))
	require.Equal(t, 7, n)

	_, err = pgx.Connect(t.Context(), "postgres://postgres:wrong@"+own.Host+":5432/postgres?sslmode=disable")
	require.Error(t, err, "a wrong password is refused over TCP")
}

// A program that is not a test starts a server, makes a database and
// removes the server with its files.
func TestStartServer(t *testing.T) {
	requireInstalled(t)
	s, err := StartServer()
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	require.NoError(t, s.CreateDatabase("bench_db"))
	require.Equal(t, 42, query(t, s.DSN("bench_db")))
	require.ErrorContains(t, s.CreateDatabase("bench_db"), "CREATE DATABASE bench_db", "a second one of the name is refused, naming the statement")
	dir := s.Dir()
	s.Close()
	closed = true
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "Close removes the server's directory")
	_, err = pgx.Connect(t.Context(), s.DSN("bench_db"))
	require.Error(t, err, "closed")
}
