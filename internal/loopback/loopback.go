// Package loopback is about the machine's own addresses (localhost,
// 127.0.0.0/8, ::1). IsHost and IsAddr tell whether a host or an address
// stays on the machine: the control plane and its clients use them to decide
// where a credential may travel without TLS, and who a loopback caller is.
//
// Host and Net hand tests loopback addresses of their own: addresses of
// 127.0.0.0/8 that no other caller in this process got and that other
// processes are unlikely to use (random, away from 127.0.x.x). A test binds
// the well-known ports it needs on such an address, instead of picking
// "free" ports by listening and closing, which races with every other
// program on the machine; a process it restarts finds its address again.
package loopback

import (
	"fmt"
	"math/rand/v2"
	"sync"
)

var (
	mu sync.Mutex
	// hosts handed out, and /24 networks handed out whole.
	hosts = map[[3]byte]bool{}
	nets  = map[[2]byte]bool{}
)

// Host returns a fresh loopback address, e.g. "127.83.17.4".
func Host() string {
	mu.Lock()
	defer mu.Unlock()
	for {
		a := [3]byte{byte(16 + rand.IntN(239)), byte(rand.IntN(256)), byte(1 + rand.IntN(254))}
		if !hosts[a] && !nets[[2]byte{a[0], a[1]}] {
			hosts[a] = true
			return fmt.Sprintf("127.%d.%d.%d", a[0], a[1], a[2])
		}
	}
}

// Net returns the first three octets of a fresh /24 of loopback addresses,
// e.g. "127.83.17": the caller may use every address in it.
func Net() string {
	mu.Lock()
	defer mu.Unlock()
	for {
		n := [2]byte{byte(16 + rand.IntN(239)), byte(rand.IntN(256))}
		if nets[n] {
			continue
		}
		used := false
		for h := range hosts {
			if h[0] == n[0] && h[1] == n[1] {
				used = true
				break
			}
		}
		if !used {
			nets[n] = true
			return fmt.Sprintf("127.%d.%d", n[0], n[1])
		}
	}
}
