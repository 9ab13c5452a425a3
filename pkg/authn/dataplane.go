package authn

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ServiceTag is the tag naming the service an inbound serves; a dataplane
// token must constrain it (docs/2026-12-06-dataplane-token-tags.md).
const ServiceTag = "kuma.io/service"

// AnyValue as the only allowed value of a tag key allows every value.
const AnyValue = "*"

// Errors of CheckInbounds, in the chain of what it returns.
var (
	// ErrUntagged: the token does not constrain ServiceTag.
	ErrUntagged = errors.New("the dataplane token does not name the services the proxy may serve (no " + ServiceTag + " tag)")
	// ErrTagNotAllowed: an inbound lacks a tag the token constrains, or
	// carries a value the token does not allow (a *TagError).
	ErrTagNotAllowed = errors.New("the dataplane token does not allow a tag of the Dataplane")
)

// TagError says which inbound tag a token does not allow.
type TagError struct {
	// Inbound is the index of the inbound.
	Inbound int
	Key     string
	// Value is the inbound's value; empty when the inbound lacks the key.
	Value string
	// Allowed are the values the token allows for Key.
	Allowed []string
}

func (e *TagError) Error() string {
	allowed := quoteAll(e.Allowed)
	if e.Value == "" {
		return fmt.Sprintf("networking.inbound[%d] has no tag %q, which the dataplane token requires (allowed: %s)", e.Inbound, e.Key, allowed)
	}
	return fmt.Sprintf("networking.inbound[%d] has %s %q, but the dataplane token allows only %s", e.Inbound, e.Key, e.Value, allowed)
}

// Is makes errors.Is(err, ErrTagNotAllowed) true.
func (e *TagError) Is(target error) bool { return target == ErrTagNotAllowed }

func quoteAll(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// NormalizeTags checks the tags of a dataplane token and returns them with
// each key's values sorted and without duplicates; nil for no tags. Keys and
// values must be non-empty text; AnyValue stands alone.
func NormalizeTags(tags map[string][]string) (map[string][]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string][]string, len(tags))
	for _, k := range keys {
		if err := checkText("tag name", k); err != nil {
			return nil, err
		}
		vs := tags[k]
		if len(vs) == 0 {
			return nil, fmt.Errorf("tag %q: at least one value is required (%q allows any)", clip(k), AnyValue)
		}
		for _, v := range vs {
			if err := checkText("tag value", v); err != nil {
				return nil, fmt.Errorf("tag %q: %w", clip(k), err)
			}
		}
		vs = slices.Clone(vs)
		slices.Sort(vs)
		vs = slices.Compact(vs)
		if len(vs) > 1 && slices.Contains(vs, AnyValue) {
			return nil, fmt.Errorf("tag %q: %q allows any value and cannot be listed with others", clip(k), AnyValue)
		}
		out[k] = vs
	}
	return out, nil
}

// Allows tells whether the token allows value for the tag key: true for a
// key the token does not constrain.
func (id DataplaneIdentity) Allows(key, value string) bool {
	vs, constrained := id.Tags[key]
	return !constrained || slices.Contains(vs, AnyValue) || slices.Contains(vs, value)
}

// CheckInbounds checks the tags of a Dataplane's inbounds (one map per
// inbound, in order) against the token: for every tag key the token names,
// every inbound must carry that key with an allowed value. A token that does
// not constrain ServiceTag is refused (ErrUntagged) unless allowUntagged.
func (id DataplaneIdentity) CheckInbounds(inbounds []map[string]string, allowUntagged bool) error {
	if _, ok := id.Tags[ServiceTag]; !ok && !allowUntagged {
		return ErrUntagged
	}
	keys := make([]string, 0, len(id.Tags))
	for k := range id.Tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, tags := range inbounds {
		for _, k := range keys {
			v, has := tags[k]
			if !has || v == "" || !id.Allows(k, v) {
				return &TagError{Inbound: i, Key: k, Value: v, Allowed: id.Tags[k]}
			}
		}
	}
	return nil
}

// InspectDataplaneToken reads what a dataplane token says WITHOUT checking
// its signature or its times: for a proxy to show its own token (when it
// expires, what it allows), never to authorize anything. It checks the
// token's form and claims as VerifyDataplane does.
func InspectDataplaneToken(token string) (DataplaneIdentity, error) {
	signed, _, err := parse(token)
	if err != nil {
		return DataplaneIdentity{}, err
	}
	c, err := decodeClaims(signed)
	if err != nil {
		return DataplaneIdentity{}, err
	}
	return dataplaneIdentity(c)
}
