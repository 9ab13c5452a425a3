// Package version holds the build's version, set at link time with
// -ldflags "-X github.com/kumametrics/mesh/pkg/version.Version=...".
package version

// Version of this build.
var Version = "0.1.0-dev"

// Product is the product name shown by the binaries.
const Product = "Kuma"
