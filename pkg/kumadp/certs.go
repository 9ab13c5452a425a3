package kumadp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"sync"
	"time"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/proxy"
	"github.com/kumametrics/mesh/pkg/stats"
)

// certManager keeps the proxy's workload certificate: the key is made here
// and never leaves the proxy; the certificate is asked from the control
// plane when the mesh's mTLS needs one, and renewed at 4/5 of its lifetime
// and whenever the mesh's CA changes. New certificates take effect for new
// handshakes; established connections are untouched.
type certManager struct {
	sec        *proxy.Security
	server     *stats.ServerStats
	mesh, name string
	log        *slog.Logger
	now        func() time.Time

	key  *ecdsa.PrivateKey
	kick chan struct{}

	mu       sync.Mutex
	needed   bool
	wantCA   string
	haveCA   string
	renewAt  time.Time
	haveCert bool
}

func newCertManager(sec *proxy.Security, server *stats.ServerStats, mesh, name string, log *slog.Logger) (*certManager, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("workload key: %w", err)
	}
	return &certManager{sec: sec, server: server, mesh: mesh, name: name, log: log, now: time.Now, key: key, kick: make(chan struct{}, 1)}, nil
}

// certPlan is the mTLS block of a new config, checked.
type certPlan struct {
	mtls *meshv1.MTLS
	// pool is the parsed trust bundle (nil: keep the current one).
	pool *x509.CertPool
}

// prepare checks the mTLS block of a new config (every CA of its trust
// bundle must parse), changing nothing.
func (c *certManager) prepare(m *meshv1.MTLS) (certPlan, error) {
	pool, err := proxy.ParseTrustBundle(m.GetTrustBundle())
	if err != nil {
		return certPlan{}, fmt.Errorf("mtls: %w", err)
	}
	return certPlan{mtls: m, pool: pool}, nil
}

// commit takes a prepared mTLS block: the trust bundle now, a certificate
// soon if one is needed and the current one does not fit.
func (c *certManager) commit(p certPlan) {
	m := p.mtls
	c.sec.SetTrustPool(p.pool)
	c.mu.Lock()
	c.needed = m != nil && (m.GetEnabled() || m.GetPermissiveUntil() > c.now().UnixMilli())
	if m.GetCaVersion() != "" {
		c.wantCA = m.GetCaVersion()
	}
	due := c.needed && (!c.haveCert || c.wantCA != c.haveCA)
	c.mu.Unlock()
	if due {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// run renews the certificate when it is due, until ctx is done.
func (c *certManager) run(ctx context.Context, sign func(ctx context.Context, req *meshv1.SignRequest) (*meshv1.SignResponse, error)) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	retry := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-timer.C:
		}
		c.mu.Lock()
		due := c.needed && (!c.haveCert || c.wantCA != c.haveCA || !c.now().Before(c.renewAt))
		c.mu.Unlock()
		if !due {
			continue
		}
		if err := c.renew(ctx, sign); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("getting a workload certificate failed; retrying", "err", err, "retry_in", retry)
			timer.Reset(retry)
			retry = min(retry*2, time.Minute)
			continue
		}
		retry = time.Second
		c.mu.Lock()
		wait := c.renewAt.Sub(c.now())
		c.mu.Unlock()
		timer.Reset(max(wait, time.Second))
	}
}

func (c *certManager) renew(ctx context.Context, sign func(ctx context.Context, req *meshv1.SignRequest) (*meshv1.SignResponse, error)) error {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: c.mesh + "/" + c.name}}, c.key)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := sign(sctx, &meshv1.SignRequest{Mesh: c.mesh, Name: c.name, Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})})
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(c.key)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(resp.GetCertChain(), keyPEM)
	if err != nil {
		return fmt.Errorf("the control plane's certificate: %w", err)
	}
	if err := c.sec.SetTrustBundle(resp.GetTrustBundle()); err != nil {
		return err
	}
	c.sec.SetCertificate(&cert)
	issued := c.now()
	lifetime := cert.Leaf.NotAfter.Sub(issued)
	c.mu.Lock()
	c.haveCert, c.haveCA = true, resp.GetCaVersion()
	c.renewAt = issued.Add(lifetime * 4 / 5)
	c.mu.Unlock()
	c.server.SetFirstCertExpiry(cert.Leaf.NotAfter)
	c.log.Info("workload certificate issued", "ca_version", resp.GetCaVersion(), "not_after", cert.Leaf.NotAfter.Format(time.RFC3339), "renew_at", c.renewAt.Format(time.RFC3339))
	return nil
}
