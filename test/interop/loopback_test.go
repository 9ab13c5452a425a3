package interop

import (
	"fmt"
	"math/rand/v2"
	"sync"
)

var (
	hostsMu sync.Mutex
	hosts   = map[string]bool{}
)

// loopbackHost returns a loopback address no other caller in this test
// binary got, random in 127.16-254.x.x (away from 127.0.x.x, which other
// programs use), e.g. "127.83.17.4". A test binds the well-known ports it
// needs there instead of picking "free" ports by listening and closing. It
// is the main module's internal/loopback.Host, which this module cannot
// import (see doc.go).
func loopbackHost() string {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	for {
		h := fmt.Sprintf("127.%d.%d.%d", 16+rand.IntN(239), rand.IntN(256), 1+rand.IntN(254))
		if !hosts[h] {
			hosts[h] = true
			return h
		}
	}
}
