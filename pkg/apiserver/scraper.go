package apiserver

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// scraperCertificateRequest is the body of POST
// /meshes/{mesh}/scraper-certificate: a CSR for a client outside the mesh
// (a Prometheus scraping proxies over mTLS).
type scraperCertificateRequest struct {
	// Service is the identity the certificate carries (spiffe://<mesh>/<service>),
	// which TrafficPermission sources match.
	Service string `json:"service"`
	// CSR is a PEM certificate request; only its public key is used.
	CSR string `json:"csr"`
	// ValidFor is a duration (default 8760h).
	ValidFor string `json:"validFor"`
}

// scraperCertificateResponse carries the certificate chain and the CAs that
// verify the proxies.
type scraperCertificateResponse struct {
	Certificate string `json:"certificate"`
	CABundle    string `json:"caBundle"`
	NotAfter    string `json:"notAfter"`
}

const scraperTitle = "Could not issue a scraper certificate"

// defaultScraperValidity of a scraper certificate.
const defaultScraperValidity = 365 * 24 * time.Hour

func (s *Server) scraperCertificate(w http.ResponseWriter, r *http.Request) {
	mesh := r.PathValue("mesh")
	var req scraperCertificateRequest
	if !s.readJSON(w, r, &req, scraperTitle) {
		return
	}
	var causes []resource.Cause
	causes = requireText(causes, "service", req.Service)
	validFor := defaultScraperValidity
	if req.ValidFor != "" {
		d, err := resource.ParseDuration(req.ValidFor)
		if err != nil || d <= 0 {
			causes = append(causes, resource.Cause{Field: "validFor", Message: "must be a positive duration such as 8760h"})
		}
		validFor = d
	}
	var csr *x509.CertificateRequest
	if block, _ := pem.Decode([]byte(req.CSR)); block == nil || block.Type != "CERTIFICATE REQUEST" {
		causes = append(causes, resource.Cause{Field: "csr", Message: "must be a PEM CERTIFICATE REQUEST"})
	} else if c, err := x509.ParseCertificateRequest(block.Bytes); err != nil {
		causes = append(causes, resource.Cause{Field: "csr", Message: err.Error()})
	} else if err := c.CheckSignature(); err != nil {
		causes = append(causes, resource.Cause{Field: "csr", Message: err.Error()})
	} else {
		csr = c
	}
	if len(causes) > 0 {
		s.invalid(w, scraperTitle, "Request is not valid", causes)
		return
	}
	m, err := s.opts.Reader.Get(r.Context(), resource.KindMesh, resource.Key{Name: mesh})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, scraperTitle, fmt.Sprintf("mesh %q does not exist", mesh), nil)
			return
		}
		s.storeError(w, err)
		return
	}
	backend := ca.Enabled(m.Mesh())
	if backend == nil {
		writeError(w, http.StatusBadRequest, scraperTitle, fmt.Sprintf("mesh %q has no mTLS enabled (mtls.enabledBackend)", mesh), nil)
		return
	}
	secrets := func(mesh, name string) *resource.Object {
		o, err := s.opts.Reader.Get(r.Context(), resource.KindSecret, resource.Key{Mesh: mesh, Name: name})
		if err != nil {
			return nil
		}
		return o
	}
	caPair, err := ca.Load(secrets, mesh, backend.Name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, scraperTitle, err.Error(), nil)
		return
	}
	cert, err := pki.Sign(caPair, pki.Leaf{
		CommonName: req.Service,
		URIs:       []*url.URL{ca.SPIFFEID(mesh, req.Service)},
		Client:     true,
		Lifetime:   validFor,
	}, csr.PublicKey, time.Now(), nil)
	if err != nil {
		writeError(w, http.StatusBadRequest, scraperTitle, err.Error(), nil)
		return
	}
	bundle, _ := ca.TrustBundle(secrets, mesh, m.Mesh())
	s.opts.Log.Info("issued a scraper certificate", "mesh", mesh, "service", req.Service, "not_after", cert.Cert.NotAfter, "by", who(r))
	writeJSON(w, http.StatusOK, scraperCertificateResponse{
		Certificate: string(cert.CertPEM) + string(caPair.CertPEM),
		CABundle:    string(bundle),
		NotAfter:    cert.Cert.NotAfter.UTC().Format(time.RFC3339),
	})
}
