package kumadp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/pki"
)

func testCAPEM(t *testing.T) string {
	t.Helper()
	ca, err := pki.NewCA("test", pki.KeyType{}, time.Now(), time.Hour)
	require.NoError(t, err)
	return string(ca.CertPEM)
}
