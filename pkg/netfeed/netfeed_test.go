package netfeed_test

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/netfeed"
)

func TestFeedAcceptClose(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5676}
	l := netfeed.New(addr)
	require.Equal(t, addr, l.Addr())

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	fed := make(chan bool)
	go func() { fed <- l.Feed(a) }()
	got, err := l.Accept()
	require.NoError(t, err)
	require.Same(t, a, got)
	require.True(t, <-fed)

	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "a second close is harmless")
	_, err = l.Accept()
	require.True(t, errors.Is(err, net.ErrClosed))
	require.False(t, l.Feed(b), "a closed listener takes nothing")
}

// A Feed waiting for an Accept is released by Close.
func TestCloseReleasesAWaitingFeed(t *testing.T) {
	l := netfeed.New(nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	fed := make(chan bool)
	go func() { fed <- l.Feed(a) }()
	require.NoError(t, l.Close())
	require.False(t, <-fed)
}
