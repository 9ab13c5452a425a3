package globalsecret_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/globalsecret"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// Replicas ensuring one secret at once all get the one that was created,
// with what was created beside it.
func TestEnsureCreatesOnce(t *testing.T) {
	st := memory.New()
	const n = 8
	got := make([][]byte, n)
	created := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			data, c, err := globalsecret.Ensure(t.Context(), st, "s", func() ([]byte, []*resource.Object, error) {
				return fmt.Appendf(nil, "from %d", i), []*resource.Object{resource.NewGlobalSecret(fmt.Sprintf("with-%d", i), []byte("x"))}, nil
			})
			if err != nil {
				t.Error(err)
			}
			got[i], created[i] = data, c
		})
	}
	wg.Wait()
	winners := 0
	for i := range n {
		require.Equal(t, got[0], got[i])
		if created[i] {
			winners++
			require.Equal(t, fmt.Appendf(nil, "from %d", i), got[i])
		}
	}
	require.Equal(t, 1, winners)
	count, err := st.Count(t.Context(), resource.KindGlobalSecret)
	require.NoError(t, err)
	require.Equal(t, 2, count, "the secret and the one created with it")

	data, err := globalsecret.Read(t.Context(), st, "missing")
	require.NoError(t, err)
	require.Nil(t, data)
}

// A stored secret whose data is not base64 is an error naming it.
func TestReadCorrupt(t *testing.T) {
	st := memory.New()
	require.NoError(t, st.Create(t.Context(), resource.New("", "bad", &resource.GlobalSecretSpec{Data: "%%%"})))
	_, err := globalsecret.Read(t.Context(), st, "bad")
	require.ErrorContains(t, err, "GlobalSecret bad is corrupt")
}
