package store

import "testing"

func TestPage(t *testing.T) {
	for _, tc := range []struct {
		opts                 ListOptions
		total                int
		start, end, nextWant int
	}{
		{ListOptions{}, 5, 0, 5, -1},
		{ListOptions{Limit: 2}, 5, 0, 2, 2},
		{ListOptions{Limit: 2, Offset: 2}, 5, 2, 4, 4},
		{ListOptions{Limit: 2, Offset: 4}, 5, 4, 5, -1},
		{ListOptions{Limit: 5}, 5, 0, 5, -1},
		{ListOptions{Offset: 7}, 5, 5, 5, -1},
		{ListOptions{Limit: 3, Offset: 9}, 5, 5, 5, -1},
		{ListOptions{Limit: 1}, 0, 0, 0, -1},
	} {
		start, end, next := tc.opts.Page(tc.total)
		if start != tc.start || end != tc.end || next != tc.nextWant {
			t.Errorf("%+v of %d: got [%d, %d) next %d, want [%d, %d) next %d", tc.opts, tc.total, start, end, next, tc.start, tc.end, tc.nextWant)
		}
	}
}
