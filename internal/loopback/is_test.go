package loopback

import "testing"

func TestIsHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true, "::ffff:127.0.0.1": true,
		"0.0.0.0": false, "": false, "::": false, "10.0.0.1": false, "cp.example": false, "localhost.example": false, "[::1]": false,
	} {
		if got := IsHost(host); got != want {
			t.Errorf("IsHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestIsAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5676": true, "[::1]:5676": true, "[::ffff:127.0.0.2]:1": true,
		"0.0.0.0:5676": false, "[::]:5676": false, "10.1.2.3:40000": false, "localhost:5676": false, "127.0.0.1": false, "": false,
	} {
		if got := IsAddr(addr); got != want {
			t.Errorf("IsAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
