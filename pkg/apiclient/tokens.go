package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"
)

// DataplaneTokenRequest asks for a dataplane token.
type DataplaneTokenRequest struct {
	Mesh string
	// Name is the Dataplane's name.
	Name string
	// Tags are the values the proxy's inbounds may carry, by tag key ("*":
	// any value). Without tags the control plane takes the services of the
	// stored Dataplane.
	Tags map[string][]string
	// ValidFor 0 asks for a token that never expires.
	ValidFor time.Duration
}

// GenerateDataplaneToken asks for a token with which the proxy of the
// Dataplane req.Name in req.Mesh may connect (`POST /tokens/dataplane`;
// admins only).
func (c *Client) GenerateDataplaneToken(ctx context.Context, req DataplaneTokenRequest) (string, error) {
	if req.Mesh == "" {
		return "", errors.New("dataplane token: a mesh is required")
	}
	if req.Name == "" {
		return "", errors.New("dataplane token: a dataplane name is required")
	}
	body := struct {
		Mesh     string              `json:"mesh"`
		Name     string              `json:"name"`
		Tags     map[string][]string `json:"tags,omitempty"`
		ValidFor string              `json:"validFor,omitempty"`
	}{Mesh: req.Mesh, Name: req.Name, Tags: req.Tags, ValidFor: durationOrEmpty(req.ValidFor)}
	return c.requestToken(ctx, "dataplane", body)
}

// GenerateUserToken asks for a user token of name in groups
// (`POST /tokens/user`; admins only). validFor 0 asks for a token that never
// expires.
func (c *Client) GenerateUserToken(ctx context.Context, name string, groups []string, validFor time.Duration) (string, error) {
	if name == "" {
		return "", errors.New("user token: a user name is required")
	}
	body := struct {
		Name     string   `json:"name"`
		Groups   []string `json:"groups,omitempty"`
		ValidFor string   `json:"validFor,omitempty"`
	}{Name: name, Groups: groups, ValidFor: durationOrEmpty(validFor)}
	return c.requestToken(ctx, "user", body)
}

func durationOrEmpty(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// requestToken posts a token request and reads the token from the text/plain answer.
func (c *Client) requestToken(ctx context.Context, kind string, body any) (string, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	u := c.endpoint(nil, "tokens", kind)
	resp, data, err := c.do(ctx, http.MethodPost, u, payload, http.Header{"Accept": {"text/plain, application/json"}})
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(data))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "text/plain" || token == "" || strings.ContainsFunc(token, isSpaceOrControl) || strings.Count(token, ".") != 2 {
		return "", fmt.Errorf("%s token: %s", kind, foreignAnswer(resp, http.MethodPost, u, nil))
	}
	return token, nil
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// ScraperCertificate is a client certificate of a mesh's CA for a scraper
// outside the mesh.
type ScraperCertificate struct {
	// Certificate is PEM: the certificate, then its CA.
	Certificate string `json:"certificate"`
	// CABundle is PEM: the CAs that verify the mesh's proxies.
	CABundle string `json:"caBundle"`
	NotAfter string `json:"notAfter"`
}

// GenerateScraperCertificate asks the mesh's CA to certify the key of csr
// (PEM) as service (`POST /meshes/{mesh}/scraper-certificate`; admins only).
func (c *Client) GenerateScraperCertificate(ctx context.Context, mesh, service string, csr []byte, validFor time.Duration) (*ScraperCertificate, error) {
	body, err := json.Marshal(struct {
		Service  string `json:"service"`
		CSR      string `json:"csr"`
		ValidFor string `json:"validFor,omitempty"`
	}{Service: service, CSR: string(csr), ValidFor: durationOrEmpty(validFor)})
	if err != nil {
		return nil, err
	}
	u := c.endpoint(nil, "meshes", mesh, "scraper-certificate")
	resp, data, err := c.do(ctx, http.MethodPost, u, body, http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return nil, err
	}
	var out ScraperCertificate
	if err := json.Unmarshal(data, &out); err != nil || out.Certificate == "" || out.CABundle == "" {
		return nil, fmt.Errorf("scraper certificate: %s", foreignAnswer(resp, http.MethodPost, u, nil))
	}
	return &out, nil
}
