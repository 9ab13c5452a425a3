// Package xds serves versioned resource snapshots over the xDS transport of
// envoy.service.discovery.v3: state-of-the-world and incremental (delta)
// gRPC streams with ACK/NACK. A snapshot is immutable and its version is a
// hash of its content, so regenerating unchanged content keeps the version
// and clients see no churn. What to serve comes from a Source; MADS serves
// one snapshot to every client, the dataplane server one per proxy.
package xds

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one named, versioned resource of a snapshot.
type Resource struct {
	Name string
	// Version is a hash of Body's bytes.
	Version string
	Body    *anypb.Any
}

// deterministic marshaling: the same content always gives the same bytes,
// hence the same version.
var marshal = proto.MarshalOptions{Deterministic: true}

// NewResource marshals msg into an Any and versions it by its content.
func NewResource(name string, msg proto.Message) (Resource, error) {
	b, err := marshal.Marshal(msg)
	if err != nil {
		return Resource{}, fmt.Errorf("marshal %s: %w", name, err)
	}
	typeURL := "type.googleapis.com/" + string(msg.ProtoReflect().Descriptor().FullName())
	return Resource{Name: name, Version: hashBytes(b), Body: &anypb.Any{TypeUrl: typeURL, Value: b}}, nil
}

func hashBytes(b []byte) string {
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], xxhash.Sum64(b))
	return hex.EncodeToString(out[:])
}

// Snapshot is an immutable set of resources of one type.
type Snapshot struct {
	typeURL   string
	version   string
	resources []Resource

	// index of the resources by name, built at the first Get (delta
	// streams look every name up; the others never do).
	indexOnce sync.Once
	index     map[string]int
}

// NewSnapshot sorts resources by name and versions the set by its content.
// Names must be unique. The snapshot takes resources over (it sorts them in
// place, unless they are in order already): the caller must not use the
// slice afterwards.
func NewSnapshot(typeURL string, resources []Resource) (*Snapshot, error) {
	rs := resources
	byName := func(a, b Resource) int { return strings.Compare(a.Name, b.Name) }
	if !slices.IsSortedFunc(rs, byName) {
		slices.SortFunc(rs, byName)
	}
	h := xxhash.New()
	_, _ = h.WriteString(typeURL)
	for i, r := range rs {
		if i > 0 && rs[i-1].Name == r.Name {
			return nil, fmt.Errorf("snapshot: resource name %q used twice", r.Name)
		}
		if r.Body == nil || r.Body.TypeUrl != typeURL {
			return nil, fmt.Errorf("snapshot: resource %q is not a %s", r.Name, typeURL)
		}
		_, _ = h.WriteString(r.Name)
		_, _ = h.Write([]byte{0})
		_, _ = h.WriteString(r.Version)
		_, _ = h.Write([]byte{0})
	}
	var sum [8]byte
	binary.BigEndian.PutUint64(sum[:], h.Sum64())
	return &Snapshot{typeURL: typeURL, version: hex.EncodeToString(sum[:]), resources: rs}, nil
}

// TypeURL of the snapshot's resources.
func (s *Snapshot) TypeURL() string { return s.typeURL }

// Version identifies the content: equal content, equal version.
func (s *Snapshot) Version() string { return s.version }

// Resources sorted by name; the slice is shared, do not modify it.
func (s *Snapshot) Resources() []Resource { return s.resources }

// Len is the number of resources.
func (s *Snapshot) Len() int { return len(s.resources) }

// Get returns a resource by name.
func (s *Snapshot) Get(name string) (Resource, bool) {
	s.indexOnce.Do(func() {
		s.index = make(map[string]int, len(s.resources))
		for i, r := range s.resources {
			s.index[r.Name] = i
		}
	})
	i, ok := s.index[name]
	if !ok {
		return Resource{}, false
	}
	return s.resources[i], true
}

// Bodies returns the resources' Anys in name order.
func (s *Snapshot) Bodies() []*anypb.Any {
	out := make([]*anypb.Any, len(s.resources))
	for i, r := range s.resources {
		out[i] = r.Body
	}
	return out
}
