package transparentproxy

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Tables reads and replaces the nat table of the current network namespace.
type Tables interface {
	// Save returns the nat table as iptables-save prints it ("" when it
	// does not exist).
	Save(ctx context.Context) (string, error)
	// Restore replaces the tables in input (iptables-restore).
	Restore(ctx context.Context, input string) error
}

// Exec runs iptables-save and iptables-restore (from PATH unless set).
type Exec struct {
	SavePath, RestorePath string
}

// Save implements Tables.
func (e Exec) Save(ctx context.Context) (string, error) {
	out, err := e.run(ctx, e.save(), "", "-t", "nat")
	if err != nil {
		return "", err
	}
	return out, nil
}

// Restore implements Tables.
func (e Exec) Restore(ctx context.Context, input string) error {
	_, err := e.run(ctx, e.restore(), input)
	return err
}

func (e Exec) save() string {
	if e.SavePath != "" {
		return e.SavePath
	}
	return "iptables-save"
}

func (e Exec) restore() string {
	if e.RestorePath != "" {
		return e.RestorePath
	}
	return "iptables-restore"
}

func (e Exec) run(ctx context.Context, path, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Install puts the rules of c into the nat table: the table is read,
// rules of an earlier install are dropped, c's added, and the table is
// replaced in one iptables-restore (all or nothing). Installing twice
// leaves one set of rules, those of the second c. It checks the rules are
// there afterwards.
func Install(ctx context.Context, t Tables, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := replace(ctx, t, &c); err != nil {
		return err
	}
	after, err := t.Save(ctx)
	if err != nil {
		return fmt.Errorf("transparent proxy: checking the rules: %w", err)
	}
	for _, chain := range []string{ChainInbound, ChainInboundRedirect, ChainOutbound, ChainOutboundRedirect} {
		if !strings.Contains(after, "\n:"+chain+" ") {
			return fmt.Errorf("transparent proxy: chain %s is missing after iptables-restore", chain)
		}
	}
	return nil
}

// Uninstall removes every chain of ours and the rules that jump to them
// from the nat table; the rest stays.
func Uninstall(ctx context.Context, t Tables) error {
	return replace(ctx, t, nil)
}

func replace(ctx context.Context, t Tables, c *Config) error {
	saved, err := t.Save(ctx)
	if err != nil {
		return fmt.Errorf("transparent proxy: reading the nat table: %w", err)
	}
	input, err := Merge(saved, c)
	if err != nil {
		return fmt.Errorf("transparent proxy: %w", err)
	}
	if err := t.Restore(ctx, input); err != nil {
		return fmt.Errorf("transparent proxy: applying the rules: %w", err)
	}
	return nil
}
