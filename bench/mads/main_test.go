package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestEnvFlags(t *testing.T) {
	fs := flag.NewFlagSet("mads", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var env envFlags
	fs.Var(&env, "env", "")
	if err := fs.Parse([]string{"-env", "KUMA_STORE_TYPE=postgres", "-env", "KUMA_STORE_POSTGRES_PASSWORD=a=b"}); err != nil {
		t.Fatal(err)
	}
	if want := "KUMA_STORE_TYPE=postgres KUMA_STORE_POSTGRES_PASSWORD=a=b"; env.String() != want {
		t.Errorf("env = %q, want %q", env.String(), want)
	}
	for _, bad := range []string{"KUMA_STORE_TYPE", "=postgres"} {
		err := fs.Parse([]string{"-env", bad})
		if err == nil || !strings.Contains(err.Error(), "want NAME=VALUE") {
			t.Errorf("-env %q: got %v, want an error saying NAME=VALUE", bad, err)
		}
	}
}

func TestOptionsCheck(t *testing.T) {
	good := options{n: 10, rounds: 1, workers: 1, store: storeSQLite, replicas: 1}
	if err := good.check(); err != nil {
		t.Fatalf("good options: %v", err)
	}
	pg2 := good
	pg2.store, pg2.replicas = storePostgres, 2
	if err := pg2.check(); err != nil || !pg2.withProxy() {
		t.Errorf("-store postgres -replicas 2: err %v, proxy %v; want nil, true", err, pg2.withProxy())
	}
	if good.withProxy() {
		t.Error("one replica without -proxy runs a proxy")
	}
	for name, c := range map[string]struct {
		change func(*options)
		want   string
	}{
		"unknown store":       {func(o *options) { o.store = "mysql" }, `-store "mysql"`},
		"two sqlite replicas": {func(o *options) { o.replicas = 2 }, "-replicas 2"},
		"three replicas":      {func(o *options) { o.store, o.replicas = storePostgres, 3 }, "-replicas 3"},
		"no replica":          {func(o *options) { o.replicas = 0 }, "-replicas 0"},
		"no dataplanes":       {func(o *options) { o.n = 0 }, "-n 0"},
		"no rounds":           {func(o *options) { o.rounds = 0 }, "-rounds 0"},
		"no writers":          {func(o *options) { o.workers = 0 }, "-workers 0"},
	} {
		o := good
		c.change(&o)
		if err := o.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error naming %q", name, err, c.want)
		}
	}
}

// -store gives kuma-cp the store's settings; -env, appended after them, wins.
func TestStoreEnv(t *testing.T) {
	pg := pgAddr{Host: "127.0.0.9", Port: 5432, User: "postgres", Password: "p=w", DB: "kuma_bench"}
	got := strings.Join(storeEnv(storePostgres, pg), " ")
	want := "KUMA_STORE_TYPE=postgres KUMA_STORE_POSTGRES_HOST=127.0.0.9 KUMA_STORE_POSTGRES_PORT=5432 " +
		"KUMA_STORE_POSTGRES_USER=postgres KUMA_STORE_POSTGRES_PASSWORD=p=w KUMA_STORE_POSTGRES_DB_NAME=kuma_bench KUMA_STORE_POSTGRES_TLS_MODE=disable"
	if got != want {
		t.Errorf("postgres env\n got %s\nwant %s", got, want)
	}
	if got := storeName(storeEnv(storeSQLite, pg)); got != storeSQLite {
		t.Errorf("sqlite: store %q", got)
	}
	if got := storeName(storeEnv(storeMemory, pg)); got != storeMemory {
		t.Errorf("memory: store %q", got)
	}
	if got := storeName(append(storeEnv(storeSQLite, pg), "KUMA_STORE_TYPE=memory")); got != storeMemory {
		t.Errorf("-env KUMA_STORE_TYPE=memory after -store sqlite: store %q, want memory", got)
	}
	if got := storeName(nil); got != storeSQLite {
		t.Errorf("no setting: store %q, want kuma-cp's default sqlite", got)
	}
}

func TestParseMembers(t *testing.T) {
	for stats, want := range map[string]int{
		"cluster.bench-target.membership_total: 3\n":                                              3,
		"cluster.bench-target.membership_healthy: 2\ncluster.bench-target.membership_total: 12\n": 12,
		"": -1,
		"cluster.bench-target.membership_total: x\n": -1,
		"no config received yet\n":                   -1,
	} {
		if got := parseMembers(stats); got != want {
			t.Errorf("parseMembers(%q) = %d, want %d", stats, got, want)
		}
	}
}
