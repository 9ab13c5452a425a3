package leader_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/leader"
)

// Always leads at once, with the campaign's context, until it is done.
func TestAlwaysLeadsUntilDone(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	led := make(chan context.Context, 1)
	done := make(chan error, 1)
	go func() {
		done <- leader.Always{}.Run(ctx, func(lctx context.Context) {
			led <- lctx
			<-lctx.Done()
		})
	}()
	lctx := <-led
	require.NoError(t, lctx.Err(), "leading")
	cancel()
	require.NoError(t, <-done)
	require.Error(t, lctx.Err())
	require.True(t, leader.LeadsAtOnce(leader.Always{}))
}

// A campaign whose context is already done does not lead.
func TestAlwaysDoesNotLeadAfterDone(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.NoError(t, leader.Always{}.Run(ctx, func(context.Context) { t.Fatal("led after ctx was done") }))
}
