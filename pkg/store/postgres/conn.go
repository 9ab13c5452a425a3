package postgres

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/pki"
)

// OptionsOf are the store's options from the control plane's
// store.postgres settings (kuma-cp run and kuma-cp migrate connect alike).
func OptionsOf(pc cpconfig.PostgresStore, log *slog.Logger) (Options, error) {
	conn, err := ConnectionOf(pc).ConnConfig()
	if err != nil {
		return Options{}, err
	}
	return Options{
		Conn: conn, MaxConns: int32(pc.MaxOpenConnections),
		MinReconnectInterval: time.Duration(pc.MinReconnectInterval), MaxReconnectInterval: time.Duration(pc.MaxReconnectInterval),
		Log: log,
	}, nil
}

// ConnectionOf is the connection the store.postgres settings describe.
func ConnectionOf(pc cpconfig.PostgresStore) Connection {
	return Connection{
		Host: pc.Host, Port: uint16(pc.Port), User: pc.User, Password: pc.Password, Database: pc.DBName,
		ConnectTimeout: time.Duration(pc.ConnectionTimeout) * time.Second,
		TLS:            TLS{Mode: pc.TLS.Mode, CertPath: pc.TLS.CertPath, KeyPath: pc.TLS.KeyPath, CAPath: pc.TLS.CAPath},
	}
}

// TLS modes (the reference system's store.postgres.tls.mode, as cpconfig names them).
const (
	TLSDisable    = cpconfig.PostgresTLSDisable
	TLSVerifyNone = cpconfig.PostgresTLSVerifyNone
	TLSVerifyCA   = cpconfig.PostgresTLSVerifyCA
	TLSVerifyFull = cpconfig.PostgresTLSVerifyFull
)

// Connection says where and how to connect.
type Connection struct {
	Host           string
	Port           uint16
	User           string
	Password       string
	Database       string
	ConnectTimeout time.Duration
	TLS            TLS
}

// TLS configures TLS to the server.
type TLS struct {
	// Mode is TLSDisable, TLSVerifyNone (encrypted, the server not
	// verified), TLSVerifyCA (its chain verified, not its name) or
	// TLSVerifyFull (chain and name).
	Mode string
	// CertPath and KeyPath: a client certificate (optional).
	CertPath, KeyPath string
	// CAPath: the CAs that verify the server (default the system's roots).
	CAPath string
}

// ConnConfig builds pgx's configuration of c.
func (c Connection) ConnConfig() (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.Database = c.Host, c.Port, c.User, c.Password, c.Database
	cfg.ConnectTimeout = c.ConnectTimeout
	cfg.Fallbacks = nil
	if cfg.TLSConfig, err = TLSConfig(c.TLS, c.Host); err != nil {
		return nil, err
	}
	return cfg, nil
}

// TLSConfig returns the client TLS configuration of a mode for server host
// (nil for TLSDisable).
func TLSConfig(t TLS, host string) (*tls.Config, error) {
	if t.Mode == TLSDisable || t.Mode == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if (t.CertPath == "") != (t.KeyPath == "") {
		return nil, errors.New("postgres tls: set both the client certificate and its key, or neither")
	}
	if t.CertPath != "" {
		cert, err := tls.LoadX509KeyPair(t.CertPath, t.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("postgres tls: client certificate %s, key %s: %w", t.CertPath, t.KeyPath, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if t.CAPath != "" {
		data, err := os.ReadFile(t.CAPath)
		if err != nil {
			return nil, fmt.Errorf("postgres tls: CA: %w", err)
		}
		if cfg.RootCAs, err = pki.Pool(data); err != nil {
			return nil, fmt.Errorf("postgres tls: CA %s: %w", t.CAPath, err)
		}
	}
	switch t.Mode {
	case TLSVerifyNone:
		cfg.InsecureSkipVerify = true
	case TLSVerifyCA:
		if cfg.RootCAs == nil {
			return nil, errors.New("postgres tls: mode verifyCa needs a CA (caPath)")
		}
		// Verify the chain, not the name: Go's verification checks both,
		// so it is done here without the name.
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("postgres tls: the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			if err != nil {
				return fmt.Errorf("postgres tls: verify the server's certificate: %w", err)
			}
			return nil
		}
	case TLSVerifyFull:
	default:
		return nil, fmt.Errorf("postgres tls: mode must be %s, %s, %s or %s, got %q", TLSDisable, TLSVerifyNone, TLSVerifyCA, TLSVerifyFull, t.Mode)
	}
	return cfg, nil
}
