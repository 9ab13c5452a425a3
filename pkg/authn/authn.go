// Package authn issues and verifies the control plane's tokens: user tokens,
// which authenticate clients of the REST API, and dataplane tokens, which
// authenticate proxies to the dataplane server. Both are compact JWTs signed
// with HS256, each kind with its own key kept in the control plane's work
// directory; a token of one kind never verifies as the other.
package authn

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kumametrics/mesh/internal/atomicfile"
)

// Files the control plane keeps in its work directory (mode 0600).
const (
	// UserSigningKeyFile holds the key of user tokens.
	UserSigningKeyFile = "user-token-signing-key"
	// DataplaneSigningKeyFile holds the key of dataplane tokens.
	DataplaneSigningKeyFile = "dp-token-signing-key"
	// AdminTokenFile holds the admin user token written on first start.
	AdminTokenFile = "admin-user-token"
)

// Users and groups.
const (
	// AdminGroup makes a user an admin: allowed everything.
	AdminGroup = "mesh-system:admin"
	// AuthenticatedGroup is implicit in every user token that verifies.
	AuthenticatedGroup = "mesh-system:authenticated"
	// UnauthenticatedGroup is the only group of the anonymous user.
	UnauthenticatedGroup = "mesh-system:unauthenticated"
	// AdminUser is the user of the admin token written on first start.
	AdminUser = "admin"
	// LocalhostAdminUser is the user of a request from a loopback address,
	// when such requests are admin.
	LocalhostAdminUser = "mesh-system:admin"
	// AnonymousUser is the user of a request without credentials.
	AnonymousUser = "mesh-system:anonymous"
)

// KeyBytes is the size of a signing key.
const KeyBytes = 32

// dataplaneType is the typ claim of dataplane tokens; user tokens have none.
const dataplaneType = "dataplane"

// User is who a user token (or a request's origin) names.
type User struct {
	// Name is the token's sub.
	Name string
	// Groups are the token's groups plus AuthenticatedGroup.
	Groups []string
	// ID is the token's jti (for audit logs); empty for users not from a token.
	ID string
	// ExpiresAt is the token's exp; zero when it never expires.
	ExpiresAt time.Time
}

// IsAdmin tells whether the user is in AdminGroup.
func (u User) IsAdmin() bool { return slices.Contains(u.Groups, AdminGroup) }

// IsAnonymous tells whether the user is the anonymous user.
func (u User) IsAnonymous() bool { return u.Name == AnonymousUser || u.Name == "" }

// Anonymous is the user of a request without credentials.
func Anonymous() User {
	return User{Name: AnonymousUser, Groups: []string{UnauthenticatedGroup}}
}

// LocalhostAdmin is the user of a request from a loopback address when
// loopback requests are admin.
func LocalhostAdmin() User {
	return User{Name: LocalhostAdminUser, Groups: []string{AdminGroup, AuthenticatedGroup}}
}

// DataplaneIdentity is what a dataplane token names.
type DataplaneIdentity struct {
	Mesh string
	// Name is the Dataplane's name.
	Name string
	// Tags are the tag values the proxy may carry on its inbounds, by tag
	// key (see CheckInbounds); nil for a token issued without tags.
	Tags map[string][]string
	// ID is the token's jti.
	ID string
	// ExpiresAt is the token's exp; zero when it never expires.
	ExpiresAt time.Time
}

// Issuer issues and verifies both kinds of tokens. It is safe for concurrent
// use.
type Issuer struct {
	userKey []byte
	dpKey   []byte
	now     func() time.Time

	adminTokenWritten bool
}

// NewIssuer returns an issuer with the given keys (at least KeyBytes each)
// and clock (time.Now when nil). Load is what the control plane uses.
func NewIssuer(userKey, dataplaneKey []byte, now func() time.Time) (*Issuer, error) {
	if len(userKey) < KeyBytes || len(dataplaneKey) < KeyBytes {
		return nil, fmt.Errorf("authn: signing keys must have at least %d bytes", KeyBytes)
	}
	if now == nil {
		now = time.Now
	}
	return &Issuer{userKey: slices.Clone(userKey), dpKey: slices.Clone(dataplaneKey), now: now}, nil
}

// Load returns the issuer of the control plane whose work directory is
// workDir. On first start it creates the directory (0700), both signing keys
// (KeyBytes random bytes each, base64 in UserSigningKeyFile and
// DataplaneSigningKeyFile) and an admin token that never expires (user
// AdminUser, group AdminGroup) in AdminTokenFile; later starts reuse the
// keys and leave the admin token file alone (a deleted one is not written
// again; an admin issues new tokens through the API). Every file is written
// atomically with mode 0600. now is the clock (time.Now when nil).
func Load(workDir string, now func() time.Time) (*Issuer, error) {
	if workDir == "" {
		return nil, errors.New("authn: no work directory")
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, fmt.Errorf("authn: create work directory: %w", err)
	}
	userKey, err := readKey(workDir, UserSigningKeyFile)
	if err != nil {
		return nil, err
	}
	firstStart := userKey == nil
	if firstStart {
		if userKey, err = newKey(); err != nil {
			return nil, err
		}
	}
	dpKey, err := readKey(workDir, DataplaneSigningKeyFile)
	if err != nil {
		return nil, err
	}
	if dpKey == nil {
		if dpKey, err = newKey(); err != nil {
			return nil, err
		}
		if err := writeKey(workDir, DataplaneSigningKeyFile, dpKey); err != nil {
			return nil, err
		}
	}
	iss, err := NewIssuer(userKey, dpKey, now)
	if err != nil {
		return nil, err
	}
	if firstStart {
		// The admin token goes first: a crash before the key is written
		// makes the next start a first start again, replacing the token.
		token, err := iss.IssueUser(AdminUser, []string{AdminGroup}, 0)
		if err != nil {
			return nil, err
		}
		if err := writeFile(workDir, AdminTokenFile, []byte(token+"\n")); err != nil {
			return nil, err
		}
		if err := writeKey(workDir, UserSigningKeyFile, userKey); err != nil {
			return nil, err
		}
		iss.adminTokenWritten = true
	}
	return iss, nil
}

// AdminTokenPath is where Load writes the admin token of workDir.
func AdminTokenPath(workDir string) string { return filepath.Join(workDir, AdminTokenFile) }

// AdminTokenWritten tells whether Load wrote the admin token (first start),
// so that the control plane can say where it is.
func (i *Issuer) AdminTokenWritten() bool { return i.adminTokenWritten }

// readKey reads a signing key; nil (and no error) when its file does not exist.
func readKey(dir, name string) ([]byte, error) {
	path := filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("authn: read signing key: %w", err)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != KeyBytes {
		return nil, fmt.Errorf("authn: signing key %s is corrupt: it must hold %d random bytes in base64 "+
			"(delete it to create a new key; every token signed with the old one then stops working)", path, KeyBytes)
	}
	return key, nil
}

func newKey() ([]byte, error) {
	key := make([]byte, KeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("authn: generate a signing key: %w", err)
	}
	return key, nil
}

func writeKey(dir, name string, key []byte) error {
	return writeFile(dir, name, []byte(base64.StdEncoding.EncodeToString(key)+"\n"))
}

// writeFile writes dir/name atomically with mode 0600.
func writeFile(dir, name string, data []byte) error {
	if err := atomicfile.Write(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("authn: %w", err)
	}
	return nil
}

// IssueUser returns a user token for name in groups (AdminGroup makes an
// admin). validFor 0 means the token never expires.
func (i *Issuer) IssueUser(name string, groups []string, validFor time.Duration) (string, error) {
	if err := checkText("user name", name); err != nil {
		return "", err
	}
	var gs []string
	for _, g := range groups {
		if err := checkText("group", g); err != nil {
			return "", err
		}
		if !slices.Contains(gs, g) {
			gs = append(gs, g)
		}
	}
	c, err := i.baseClaims(validFor)
	if err != nil {
		return "", err
	}
	c.Sub, c.Groups = name, gs
	return sign(i.userKey, c)
}

// IssueDataplane returns a dataplane token for the Dataplane name in mesh
// whose inbounds may carry the given tag values (see CheckInbounds; nil or
// empty: a token without tags, which the dataplane server refuses unless
// configured otherwise). validFor 0 means the token never expires.
func (i *Issuer) IssueDataplane(mesh, name string, tags map[string][]string, validFor time.Duration) (string, error) {
	if err := checkText("mesh", mesh); err != nil {
		return "", err
	}
	if err := checkText("dataplane name", name); err != nil {
		return "", err
	}
	normalized, err := NormalizeTags(tags)
	if err != nil {
		return "", err
	}
	c, err := i.baseClaims(validFor)
	if err != nil {
		return "", err
	}
	c.Typ, c.Mesh, c.Name, c.Tags = dataplaneType, mesh, name, normalized
	return sign(i.dpKey, c)
}

func (i *Issuer) baseClaims(validFor time.Duration) (claims, error) {
	if validFor < 0 {
		return claims{}, fmt.Errorf("validity must not be negative, got %s", validFor)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return claims{}, fmt.Errorf("generate token id: %w", err)
	}
	now := i.now()
	iat := now.Unix()
	c := claims{Iat: &iat, Jti: base64.RawURLEncoding.EncodeToString(id)}
	if validFor > 0 {
		exp := now.Add(validFor).Unix()
		c.Exp = &exp
	}
	return c, nil
}

// checkText refuses an empty value, or one with control characters, which
// could not be shown or logged safely.
func checkText(what, s string) error {
	if s == "" {
		return fmt.Errorf("a %s is required", what)
	}
	if len(s) > 253 {
		return fmt.Errorf("%s must be at most 253 bytes", what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s must not contain control characters", what)
		}
	}
	return nil
}

// VerifyUser checks a user token and returns its user. Every error is
// ErrInvalid (ErrExpired too, for an expired token) in its chain.
func (i *Issuer) VerifyUser(token string) (User, error) {
	c, err := verify(i.userKey, token, i.now())
	if err != nil {
		return User{}, err
	}
	if c.Typ != "" {
		return User{}, invalid("a token of type %q is not a user token", clip(c.Typ))
	}
	if c.Sub == "" {
		return User{}, invalid("the token names no user")
	}
	u := User{Name: c.Sub, ID: c.Jti, ExpiresAt: unixOrZero(c.Exp)}
	for _, g := range c.Groups {
		if g != "" && !slices.Contains(u.Groups, g) {
			u.Groups = append(u.Groups, g)
		}
	}
	if !slices.Contains(u.Groups, AuthenticatedGroup) {
		u.Groups = append(u.Groups, AuthenticatedGroup)
	}
	return u, nil
}

// VerifyDataplane checks a dataplane token and returns the dataplane it
// names. Every error is ErrInvalid (ErrExpired too, for an expired token) in
// its chain.
func (i *Issuer) VerifyDataplane(token string) (DataplaneIdentity, error) {
	c, err := verify(i.dpKey, token, i.now())
	if err != nil {
		return DataplaneIdentity{}, err
	}
	return dataplaneIdentity(c)
}

// dataplaneIdentity checks the claims of a dataplane token.
func dataplaneIdentity(c claims) (DataplaneIdentity, error) {
	if c.Typ != dataplaneType {
		return DataplaneIdentity{}, invalid("not a dataplane token")
	}
	if c.Mesh == "" || c.Name == "" {
		return DataplaneIdentity{}, invalid("the token names no dataplane")
	}
	tags, err := NormalizeTags(c.Tags)
	if err != nil {
		return DataplaneIdentity{}, invalid("its tags: %s", err.Error())
	}
	return DataplaneIdentity{Mesh: c.Mesh, Name: c.Name, Tags: tags, ID: c.Jti, ExpiresAt: unixOrZero(c.Exp)}, nil
}

// ErrWrongDataplane is in the chain of VerifyDataplaneFor's error for a valid
// token issued for another dataplane.
var ErrWrongDataplane = errors.New("the dataplane token is for another dataplane")

// VerifyDataplaneFor checks that token is a valid dataplane token for the
// Dataplane name in mesh: the dataplane server's check of a connecting proxy.
func (i *Issuer) VerifyDataplaneFor(token, mesh, name string) (DataplaneIdentity, error) {
	id, err := i.VerifyDataplane(token)
	if err != nil {
		return DataplaneIdentity{}, err
	}
	if id.Mesh != mesh || id.Name != name {
		return DataplaneIdentity{}, fmt.Errorf("%w: it names dataplane %q in mesh %q, not %q in mesh %q",
			ErrWrongDataplane, id.Name, id.Mesh, name, mesh)
	}
	return id, nil
}

func unixOrZero(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return time.Unix(*v, 0).UTC()
}

// BearerToken returns the token of an Authorization header value of the
// form `Bearer <token>` (the scheme in any case). ok is false for any other
// form, an empty token included.
func BearerToken(header string) (token string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(header), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
