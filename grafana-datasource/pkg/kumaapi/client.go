// Package kumaapi reads what the datasource needs from the control plane's
// REST API: its identity (GET /), meshes, zones and service insights. Lists
// are paged as the API pages them ({"total", "items", "next"}).
package kumaapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxBody bounds what one answer may hold.
const maxBody = 32 << 20

// pageSize is the page size asked for (the API's maximum); maxPages bounds
// how many pages one list follows.
const (
	pageSize = 1000
	maxPages = 1000
)

// Client calls one control plane.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string
}

// New is a client of the API at base (http or https), sending token (a
// user token) as a Bearer token when not empty. Whether the token may go
// there is the caller's decision.
func New(base *url.URL, httpClient *http.Client, token string) *Client {
	b := *base
	b.Path = strings.TrimRight(b.Path, "/")
	return &Client{base: &b, http: httpClient, token: token}
}

// Index is the answer of GET /.
type Index struct {
	Hostname string `json:"hostname"`
	Tagline  string `json:"tagline"`
	Version  string `json:"version"`
}

// Mesh is the part of a Mesh the datasource shows.
type Mesh struct {
	Name    string   `json:"name"`
	MTLS    *Backend `json:"mtls"`
	Metrics *Backend `json:"metrics"`
}

// Backend is a mesh's mtls or metrics section: the enabled backend among
// the listed ones.
type Backend struct {
	EnabledBackend string `json:"enabledBackend"`
	Backends       []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"backends"`
}

// Enabled renders the enabled backend as kumactl does: `type/name`, or
// `off`.
func (b *Backend) Enabled() string {
	if b == nil || b.EnabledBackend == "" {
		return "off"
	}
	for _, x := range b.Backends {
		if x.Name == b.EnabledBackend && x.Type != "" {
			return x.Type + "/" + x.Name
		}
	}
	return b.EnabledBackend
}

// Zone is an item of GET /zones.
type Zone struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
}

// ServiceInsight is an item of GET /meshes/{mesh}/service-insights.
type ServiceInsight struct {
	Mesh       string `json:"mesh"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	Dataplanes struct {
		Online  int `json:"online"`
		Offline int `json:"offline"`
		Total   int `json:"total"`
	} `json:"dataplanes"`
}

// Error is an answer other than 200, with the API's error body when it
// sent one.
type Error struct {
	Path    string
	Status  int
	Title   string
	Details string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("control plane: GET %s: %d %s", e.Path, e.Status, http.StatusText(e.Status))
	if e.Details != "" {
		msg += ": " + e.Details
	} else if e.Title != "" {
		msg += ": " + e.Title
	}
	return msg
}

// IsNotFound tells whether err is the API's 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Index reads GET /: the control plane's host name and version.
func (c *Client) Index(ctx context.Context) (Index, error) {
	var i Index
	err := c.get(ctx, "/", nil, &i)
	return i, err
}

// Meshes lists every mesh.
func (c *Client) Meshes(ctx context.Context) ([]Mesh, error) {
	return list[Mesh](ctx, c, "/meshes")
}

// Mesh reads one mesh.
func (c *Client) Mesh(ctx context.Context, name string) (Mesh, error) {
	var m Mesh
	err := c.get(ctx, "/meshes/"+url.PathEscape(name), nil, &m)
	return m, meshNotFound(name, err)
}

// Zones lists the control plane's zones (one for a single-zone one).
func (c *Client) Zones(ctx context.Context) ([]Zone, error) {
	return list[Zone](ctx, c, "/zones")
}

// ServiceInsights lists the services of a mesh with their dataplanes.
func (c *Client) ServiceInsights(ctx context.Context, mesh string) ([]ServiceInsight, error) {
	ss, err := list[ServiceInsight](ctx, c, "/meshes/"+url.PathEscape(mesh)+"/service-insights")
	return ss, meshNotFound(mesh, err)
}

// meshNotFound names the mesh in the API's 404 for a path under it (still
// IsNotFound).
func meshNotFound(mesh string, err error) error {
	if IsNotFound(err) {
		return fmt.Errorf("mesh %q not found: %w", mesh, err)
	}
	return err
}

// list reads every page of a list.
func list[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	var all []T
	q := url.Values{"size": {fmt.Sprint(pageSize)}, "offset": {"0"}}
	for range maxPages {
		var page struct {
			Items []T     `json:"items"`
			Next  *string `json:"next"`
		}
		if err := c.get(ctx, path, q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Next == nil || *page.Next == "" || len(page.Items) == 0 {
			return all, nil
		}
		next, err := url.Parse(*page.Next)
		if err != nil {
			return nil, fmt.Errorf("control plane: GET %s: bad next page %q: %w", path, *page.Next, err)
		}
		// Follow the offset only: the next URL names the host the control
		// plane saw, which need not be the one we reach it at.
		q.Set("offset", next.Query().Get("offset"))
	}
	return nil, fmt.Errorf("control plane: GET %s: more than %d pages", path, maxPages)
}

// get calls GET path and decodes the JSON answer into out.
func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("control plane at %s is not reachable: %w", c.base.Redacted(), err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("control plane: GET %s: reading the answer: %w", path, err)
	}
	if len(body) > maxBody {
		return fmt.Errorf("control plane: GET %s: the answer is larger than %d bytes", path, maxBody)
	}
	if res.StatusCode != http.StatusOK {
		e := &Error{Path: path, Status: res.StatusCode}
		var apiErr struct {
			Title   string `json:"title"`
			Details string `json:"details"`
		}
		if json.Unmarshal(body, &apiErr) == nil {
			e.Title, e.Details = apiErr.Title, apiErr.Details
		}
		return e
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("control plane: GET %s: the answer is not the API's JSON (is %s the control plane's API?): %w", path, c.base.Redacted(), err)
	}
	return nil
}
