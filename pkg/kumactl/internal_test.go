package kumactl

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-5 * time.Second, "<invalid>"},
		{-1 * time.Second, "0s"},
		{45 * time.Second, "45s"},
		{119 * time.Second, "119s"},
		{3 * time.Minute, "3m"},
		{3*time.Minute + 20*time.Second, "3m20s"},
		{2 * time.Hour, "120m"},
		{4 * time.Hour, "4h"},
		{4*time.Hour + 30*time.Minute, "4h30m"},
		{26 * time.Hour, "26h"},
		{5 * 24 * time.Hour, "5d"},
		{5*24*time.Hour + 3*time.Hour, "5d3h"},
		{400 * 24 * time.Hour, "400d"},
		{3 * 365 * 24 * time.Hour, "3y"},
		{10 * 365 * 24 * time.Hour, "10y"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			require.Equal(t, tc.want, humanDuration(tc.d))
		})
	}
	require.Equal(t, "<unknown>", age(time.Now(), time.Time{}))
}
