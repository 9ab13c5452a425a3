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
