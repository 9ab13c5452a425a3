package authn

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The token format is a compact JWT (RFC 7519) signed with HMAC-SHA256
// (HS256). Nothing else is accepted: the header must name HS256, so that a
// token cannot pick its own (weaker or absent) algorithm.
const (
	algHS256 = "HS256"
	// MaxTokenBytes bounds a token; a longer one is refused before any decoding.
	MaxTokenBytes = 8 << 10
	// Leeway is the clock skew tolerated when checking exp, nbf and iat.
	Leeway = 30 * time.Second
)

// ErrInvalid is in the chain of every error of a token that does not verify,
// expired ones included. Messages say why and never contain the token.
var ErrInvalid = errors.New("invalid token")

// ErrExpired is in the chain of the error of a well-signed token past its exp.
var ErrExpired = errors.New("token expired")

type expiredError struct{ at int64 }

func (e expiredError) Error() string {
	return "token expired at " + time.Unix(e.at, 0).UTC().Format(time.RFC3339)
}

func (e expiredError) Is(target error) bool { return target == ErrExpired || target == ErrInvalid }

// b64 is base64url without padding, strict: a segment has exactly one valid
// encoding, so a signature cannot be re-encoded into another accepted token.
var b64 = base64.RawURLEncoding.Strict()

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
	// Crit lists extensions the verifier must understand; it understands none.
	Crit json.RawMessage `json:"crit,omitempty"`
}

// claims is the payload of both token kinds. Which fields are required
// depends on the kind.
type claims struct {
	Typ    string   `json:"typ,omitempty"`
	Sub    string   `json:"sub,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Mesh   string   `json:"mesh,omitempty"`
	Name   string   `json:"name,omitempty"`
	// Tags are the tag values a dataplane token allows, by key.
	Tags map[string][]string `json:"tags,omitempty"`
	Exp  *int64              `json:"exp,omitempty"`
	Nbf  *int64              `json:"nbf,omitempty"`
	Iat  *int64              `json:"iat,omitempty"`
	Jti  string              `json:"jti,omitempty"`
}

// encodedHeader is the header of every token this package signs.
var encodedHeader = b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

func sign(key []byte, c claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode token claims: %w", err)
	}
	input := encodedHeader + "." + b64.EncodeToString(payload)
	return input + "." + b64.EncodeToString(mac(key, input)), nil
}

func mac(key []byte, input string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(input))
	return h.Sum(nil)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// verify checks the form, the algorithm and the signature of a token and
// returns its claims; the time claims are checked against now with Leeway.
// The caller checks the claims of its kind.
func verify(key []byte, token string, now time.Time) (claims, error) {
	signed, sig, err := parse(token)
	if err != nil {
		return claims{}, err
	}
	if !hmac.Equal(sig, mac(key, signed)) {
		return claims{}, invalid("signature does not match")
	}
	c, err := decodeClaims(signed)
	if err != nil {
		return claims{}, err
	}
	// Compare in whole seconds: no time arithmetic that could overflow on
	// absurd values.
	sec, leeway := now.Unix(), int64(Leeway/time.Second)
	if c.Exp != nil && *c.Exp < sec-leeway {
		return claims{}, expiredError{at: *c.Exp}
	}
	if c.Nbf != nil && *c.Nbf > sec+leeway {
		return claims{}, invalid("not valid before %s", time.Unix(*c.Nbf, 0).UTC().Format(time.RFC3339))
	}
	if c.Iat != nil && *c.Iat > sec+leeway {
		return claims{}, invalid("issued in the future (%s)", time.Unix(*c.Iat, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// parse checks the form and the header of a token and returns its signed
// part (header.payload) and its decoded signature, which it does not check.
func parse(token string) (signed string, sig []byte, err error) {
	if token == "" {
		return "", nil, invalid("empty token")
	}
	if len(token) > MaxTokenBytes {
		return "", nil, invalid("longer than %d bytes", MaxTokenBytes)
	}
	if strings.Count(token, ".") != 2 {
		return "", nil, invalid("not a compact JWT (three base64url parts separated by dots)")
	}
	first, last := strings.IndexByte(token, '.'), strings.LastIndexByte(token, '.')
	rawHeader, err := b64.DecodeString(token[:first])
	if err != nil {
		return "", nil, invalid("header is not base64url")
	}
	var h header
	if err := json.Unmarshal(rawHeader, &h); err != nil {
		return "", nil, invalid("header is not a JSON object")
	}
	if h.Alg != algHS256 {
		return "", nil, invalid("signing algorithm %q is not accepted (only %s)", clip(h.Alg), algHS256)
	}
	if h.Typ != "" && !strings.EqualFold(h.Typ, "JWT") {
		return "", nil, invalid("header type %q is not JWT", clip(h.Typ))
	}
	if len(h.Crit) > 0 {
		return "", nil, invalid("header lists critical extensions, none of which are supported")
	}
	sig, err = b64.DecodeString(token[last+1:])
	if err != nil {
		return "", nil, invalid("signature is not base64url")
	}
	return token[:last], sig, nil
}

// decodePayload decodes the payload of a signed part (header.payload).
func decodePayload(signed string) ([]byte, error) {
	payload, err := b64.DecodeString(signed[strings.IndexByte(signed, '.')+1:])
	if err != nil {
		return nil, invalid("payload is not base64url")
	}
	return payload, nil
}

// decodeClaims decodes the claims of a signed part (header.payload).
func decodeClaims(signed string) (claims, error) {
	var c claims
	payload, err := decodePayload(signed)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return claims{}, invalid("payload is not a JSON object of the expected claims")
	}
	return c, nil
}

// clip shortens a value taken from a token before it goes into a message.
func clip(s string) string {
	const maxLen = 32
	if len(s) > maxLen {
		return s[:maxLen] + "…"
	}
	return s
}
