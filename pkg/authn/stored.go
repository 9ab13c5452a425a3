package authn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/kumametrics/mesh/pkg/globalsecret"
	"github.com/kumametrics/mesh/pkg/resource"
)

// GlobalSecrets the control planes sharing a store keep their token
// material in (the reference system's names; docs/2026-12-06-signing-keys-in-the-store.md).
const (
	// UserSigningKeySecret holds the key of user tokens.
	UserSigningKeySecret = "user-token-signing-key-1"
	// DataplaneSigningKeySecret holds the key of dataplane tokens.
	DataplaneSigningKeySecret = "dataplane-token-signing-key-1"
	// AdminTokenSecret holds the admin user token issued on the first start
	// of the control plane (whichever replica made the user signing key).
	AdminTokenSecret = "admin-user-token"
)

// SecretStore is what LoadStored needs of the store.
type SecretStore = globalsecret.Store

// Loaded is what LoadStored did besides returning the issuer.
type Loaded struct {
	// AdminTokenIssued: this call issued the admin token (the first start
	// of the whole control plane).
	AdminTokenIssued bool
	// AdminTokenWritten: this call wrote the admin token to AdminTokenFile
	// of the work directory (it was missing there).
	AdminTokenWritten bool
	// Migrated names the key files of the work directory whose keys this
	// call put into the store (an upgrade from keys kept in files).
	Migrated []string
}

// LoadStored returns the issuer of the control planes sharing st, whose
// signing keys are the GlobalSecrets UserSigningKeySecret and
// DataplaneSigningKeySecret: a token one replica issues verifies on every
// other. A missing key is created once: the first replica to Create it
// wins, the others read the winner's. Its value is the key file of workDir
// when there is one (UserSigningKeyFile, DataplaneSigningKeyFile: a control
// plane that kept its keys in files moves them into the store, and the
// tokens issued before keep working), else KeyBytes random bytes. The user
// key is created together with the admin token (AdminTokenSecret, in the
// same transaction): a fresh key gets a new admin token that never expires,
// a key from a file takes the admin token file beside it, if any. Last, the
// admin token is written to AdminTokenFile of workDir when that file is
// missing or holds another token, so that every replica's work directory
// has the store's. The work directory also keeps a copy of the keys (the
// store's win over it).
func LoadStored(ctx context.Context, st SecretStore, workDir string, now func() time.Time) (*Issuer, Loaded, error) {
	var done Loaded
	if workDir == "" {
		return nil, done, errors.New("authn: no work directory")
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, done, fmt.Errorf("authn: create work directory: %w", err)
	}
	dpKey, err := storedKey(ctx, st, DataplaneSigningKeySecret, workDir, DataplaneSigningKeyFile, &done, nil)
	if err != nil {
		return nil, done, err
	}
	// The admin token goes with a new user key: issued with that key, by
	// an issuer of it.
	withUserKey := func(key []byte, fromFile bool) ([]*resource.Object, error) {
		if fromFile {
			token, err := os.ReadFile(AdminTokenPath(workDir))
			if errors.Is(err, fs.ErrNotExist) {
				return nil, nil // deleted by its admin: not issued again
			}
			if err != nil {
				return nil, fmt.Errorf("authn: read the admin token: %w", err)
			}
			return []*resource.Object{resource.NewGlobalSecret(AdminTokenSecret, token)}, nil
		}
		iss, err := NewIssuer(key, dpKey, now)
		if err != nil {
			return nil, err
		}
		token, err := iss.IssueUser(AdminUser, []string{AdminGroup}, 0)
		if err != nil {
			return nil, err
		}
		return []*resource.Object{resource.NewGlobalSecret(AdminTokenSecret, []byte(token+"\n"))}, nil
	}
	userKey, err := storedKey(ctx, st, UserSigningKeySecret, workDir, UserSigningKeyFile, &done, withUserKey)
	if err != nil {
		return nil, done, err
	}
	iss, err := NewIssuer(userKey, dpKey, now)
	if err != nil {
		return nil, done, err
	}
	if done.AdminTokenWritten, err = writeAdminToken(ctx, st, workDir); err != nil {
		return nil, done, err
	}
	return iss, done, nil
}

// storedKey returns the signing key kept in the GlobalSecret name, creating
// it (from the work directory's file, when there is one) when it is
// missing; with, when set, gives what is created with a new key.
func storedKey(ctx context.Context, st SecretStore, name, workDir, file string, done *Loaded,
	with func(key []byte, fromFile bool) ([]*resource.Object, error)) ([]byte, error) {
	fromFile := false
	key, created, err := globalsecret.Ensure(ctx, st, name, func() ([]byte, []*resource.Object, error) {
		key, err := readKey(workDir, file)
		if err != nil {
			return nil, nil, err
		}
		if fromFile = key != nil; !fromFile {
			if key, err = newKey(); err != nil {
				return nil, nil, err
			}
		}
		if with == nil {
			return key, nil, nil
		}
		extra, err := with(key, fromFile)
		return key, extra, err
	})
	if err != nil {
		return nil, fmt.Errorf("authn: signing key: %w", err)
	}
	if len(key) != KeyBytes {
		return nil, fmt.Errorf("authn: the signing key in GlobalSecret %s is corrupt: it must hold %d random bytes", name, KeyBytes)
	}
	// The work directory keeps a copy, as before the store kept them: a
	// control plane on the memory store keeps its keys across restarts.
	if onDisk, err := readKey(workDir, file); err != nil || !bytes.Equal(onDisk, key) {
		if err := writeKey(workDir, file, key); err != nil {
			return nil, err
		}
	}
	switch {
	case created && fromFile:
		done.Migrated = append(done.Migrated, file)
	case created && with != nil:
		done.AdminTokenIssued = true
	}
	return key, nil
}

// writeAdminToken writes the stored admin token to the work directory when
// it is missing there or another one (a restore brought the store another
// control plane's keys and token).
func writeAdminToken(ctx context.Context, st SecretStore, workDir string) (bool, error) {
	token, err := globalsecret.Read(ctx, st, AdminTokenSecret)
	if err != nil || token == nil {
		return false, err
	}
	if old, err := os.ReadFile(AdminTokenPath(workDir)); err == nil && bytes.Equal(old, token) {
		return false, nil
	}
	if err := writeFile(workDir, AdminTokenFile, token); err != nil {
		return false, err
	}
	return true, nil
}
