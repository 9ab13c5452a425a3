//go:build !linux

package residency

// DropStartupPages does nothing outside Linux.
func DropStartupPages() (int, error) { return 0, nil }
