// Package apiclient is a typed client of the control plane's REST API: the
// index, resources of every kind (get, list across pages, put with optional
// optimistic concurrency, delete), dataplane overviews, service insights,
// zones and token issuing, authenticated with a user token when one is given
// (WithToken), over https with the TLS settings of WithTLSConfig. Error answers become *Error values carrying the decoded error
// body.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/kumametrics/mesh/pkg/resource"
)

// DefaultTimeout bounds every request when no WithTimeout option is given.
const DefaultTimeout = 30 * time.Second

const (
	maxBodyBytes      = 64 << 20 // a full page of 1000 resources fits easily
	maxErrorBodyBytes = 1 << 20
	maxSnippetRunes   = 200
)

// Client talks to one control plane. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	timeout   time.Duration
	pageSize  int
	userAgent string
	token     string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests through hc (for TLS
// settings, proxies or tests). The default is a plain &http.Client{}.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.http = hc
		}
	}
}

// WithTLSConfig makes the client verify an https:// control plane (and
// present a certificate) as cfg says, through a transport of its own in
// place of the HTTP client's (nil changes nothing).
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) {
		if cfg == nil {
			return
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg
		c.http = &http.Client{Transport: tr}
	}
}

// WithTimeout bounds each request, reading its answer included; 0 or less
// means no bound (the caller's context still applies). A list is bounded
// page by page.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithPageSize asks list endpoints for pages of n items (the API allows 1 to
// 1000); 0 leaves the server's default (100).
func WithPageSize(n int) Option { return func(c *Client) { c.pageSize = n } }

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithToken authenticates every request with a user token
// (`Authorization: Bearer <token>`); empty sends none.
func WithToken(token string) Option { return func(c *Client) { c.token = strings.TrimSpace(token) } }

// New returns a client of the control plane whose API is at baseURL (such as
// http://localhost:5681; a path prefix is kept).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := ParseAddress(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{base: u, http: &http.Client{}, timeout: DefaultTimeout, userAgent: "kumactl"}
	for _, o := range opts {
		o(c)
	}
	if c.pageSize < 0 || c.pageSize > 1000 {
		return nil, fmt.Errorf("page size must be from 1 to 1000, got %d", c.pageSize)
	}
	return c, nil
}

// ParseAddress checks a control plane address: an absolute http or https URL
// with a host and no query. The trailing slash of its path is dropped.
func ParseAddress(address string) (*url.URL, error) {
	s := strings.TrimSpace(address)
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid control plane address %q: %w", address, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("invalid control plane address %q: must start with http:// or https://", address)
	case u.Host == "":
		return nil, fmt.Errorf("invalid control plane address %q: no host", address)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("invalid control plane address %q: must not have a query or a fragment", address)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

// BaseURL returns the address of the control plane's API.
func (c *Client) BaseURL() string { return c.base.String() }

// Index returns the control plane's identity (`GET /`).
func (c *Client) Index(ctx context.Context) (*Index, error) {
	u := c.endpoint(nil)
	resp, body, err := c.do(ctx, http.MethodGet, u, nil, nil)
	if err != nil {
		return nil, err
	}
	var idx Index
	if err := decodeBody(resp, http.MethodGet, u, body, &idx); err != nil {
		return nil, err
	}
	return &idx, nil
}

// Get returns one resource. mesh is ignored for Meshes. The object's
// Meta.Version is taken from the answer's ETag.
func (c *Client) Get(ctx context.Context, kind resource.Kind, mesh, name string) (*resource.Object, error) {
	d, segs, err := itemPath(kind, mesh, name)
	if err != nil {
		return nil, err
	}
	u := c.endpoint(nil, segs...)
	resp, body, err := c.do(ctx, http.MethodGet, u, nil, nil)
	if err != nil {
		return nil, err
	}
	obj, err := decodeObject(resp, http.MethodGet, u, body)
	if err != nil {
		return nil, err
	}
	if d.Scoped && obj.Meta.Mesh == "" {
		obj.Meta.Mesh = mesh
	}
	obj.Meta.Version = parseETag(resp.Header.Get("ETag"))
	return obj, nil
}

// List returns every resource of a kind in a mesh, reading all pages. An
// empty mesh lists every mesh; mesh is ignored for Meshes.
func (c *Client) List(ctx context.Context, kind resource.Kind, mesh string) ([]*resource.Object, error) {
	d, segs, err := collectionPath(kind, mesh)
	if err != nil {
		return nil, err
	}
	return listAll(ctx, c, segs, objectDecoder(d, mesh))
}

// ListPages reads every resource of a kind in a mesh page by page (pages of
// the WithPageSize size), handing each page to fn as it arrives, so that a
// caller streaming a large collection never holds more than one page. An
// empty mesh lists every mesh; an error from fn stops the listing.
func (c *Client) ListPages(ctx context.Context, kind resource.Kind, mesh string, fn func(page []*resource.Object) error) error {
	d, segs, err := collectionPath(kind, mesh)
	if err != nil {
		return err
	}
	return eachPage(ctx, c, segs, nil, objectDecoder(d, mesh), func(page pageOf[*resource.Object]) error { return fn(page.items) })
}

// Count returns how many resources of a kind a mesh holds (every mesh when
// mesh is empty), reading a one-item page and its total.
func (c *Client) Count(ctx context.Context, kind resource.Kind, mesh string) (int, error) {
	d, segs, err := collectionPath(kind, mesh)
	if err != nil {
		return 0, err
	}
	total := 0
	stop := errors.New("first page read")
	err = eachPage(ctx, c, segs, url.Values{"size": {"1"}}, objectDecoder(d, mesh), func(page pageOf[*resource.Object]) error {
		total = page.total
		return stop
	})
	if err != nil && !errors.Is(err, stop) {
		return 0, err
	}
	return total, nil
}

func collectionPath(kind resource.Kind, mesh string) (resource.Descriptor, []string, error) {
	d, err := resource.Describe(kind)
	if err != nil {
		return d, nil, err
	}
	segs := []string{d.Plural}
	if d.Scoped && mesh != "" {
		segs = []string{"meshes", mesh, d.Plural}
	}
	return d, segs, nil
}

// objectDecoder reads a listed resource, placing it in mesh when the answer
// leaves its mesh out.
func objectDecoder(d resource.Descriptor, mesh string) func(json.RawMessage) (*resource.Object, error) {
	return func(raw json.RawMessage) (*resource.Object, error) {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, err
		}
		if d.Scoped && o.Meta.Mesh == "" {
			o.Meta.Mesh = mesh
		}
		return &o, nil
	}
}

// Put creates or replaces a resource (`PUT`) and returns what the control
// plane stored, with created telling a creation (201) from an update (200).
// A non-zero ifMatch makes the write conditional on the stored version
// (If-Match); a stale version fails with a 409 *Error (see IsConflict).
func (c *Client) Put(ctx context.Context, obj *resource.Object, ifMatch int64) (stored *resource.Object, created bool, err error) {
	if obj == nil {
		return nil, false, errors.New("put: no resource")
	}
	_, segs, err := itemPath(obj.Meta.Kind, obj.Meta.Mesh, obj.Meta.Name)
	if err != nil {
		return nil, false, err
	}
	payload, err := obj.MarshalJSON()
	if err != nil {
		return nil, false, err
	}
	var hdr http.Header
	if ifMatch != 0 {
		hdr = http.Header{"If-Match": {strconv.Quote(strconv.FormatInt(ifMatch, 10))}}
	}
	u := c.endpoint(nil, segs...)
	resp, body, err := c.do(ctx, http.MethodPut, u, payload, hdr)
	if err != nil {
		return nil, false, err
	}
	created = resp.StatusCode == http.StatusCreated
	if len(bytes.TrimSpace(body)) == 0 {
		cp := *obj
		stored = &cp
	} else if stored, err = decodeObject(resp, http.MethodPut, u, body); err != nil {
		return nil, false, err
	}
	if stored.Meta.Mesh == "" {
		stored.Meta.Mesh = obj.Meta.Mesh
	}
	stored.Meta.Version = parseETag(resp.Header.Get("ETag"))
	return stored, created, nil
}

// Delete removes a resource. mesh is ignored for Meshes (deleting a Mesh
// deletes everything in it).
func (c *Client) Delete(ctx context.Context, kind resource.Kind, mesh, name string) error {
	_, segs, err := itemPath(kind, mesh, name)
	if err != nil {
		return err
	}
	_, _, err = c.do(ctx, http.MethodDelete, c.endpoint(nil, segs...), nil, nil)
	return err
}

// DataplaneOverviews returns the dataplanes of a mesh with their insights,
// reading all pages.
func (c *Client) DataplaneOverviews(ctx context.Context, mesh string) ([]DataplaneOverview, error) {
	if mesh == "" {
		return nil, errors.New("dataplane overviews: a mesh is required")
	}
	return listAll(ctx, c, []string{"meshes", mesh, "dataplanes+insights"}, decodeLenient[DataplaneOverview])
}

// ServiceInsights returns the services of a mesh with their dataplane
// counts, reading all pages.
func (c *Client) ServiceInsights(ctx context.Context, mesh string) ([]ServiceInsight, error) {
	if mesh == "" {
		return nil, errors.New("service insights: a mesh is required")
	}
	return listAll(ctx, c, []string{"meshes", mesh, "service-insights"}, decodeLenient[ServiceInsight])
}

// Zones returns the control plane's zones, reading all pages.
func (c *Client) Zones(ctx context.Context) ([]Zone, error) {
	return listAll(ctx, c, []string{"zones"}, decodeLenient[Zone])
}

func decodeLenient[T any](raw json.RawMessage) (T, error) {
	var v T
	err := json.Unmarshal(raw, &v)
	return v, err
}

// itemPath returns the path segments of one resource.
func itemPath(kind resource.Kind, mesh, name string) (resource.Descriptor, []string, error) {
	d, err := resource.Describe(kind)
	if err != nil {
		return d, nil, err
	}
	if err := checkSegment("name", name); err != nil {
		return d, nil, err
	}
	if !d.Scoped {
		return d, []string{d.Plural, name}, nil
	}
	if err := checkSegment("mesh", mesh); err != nil {
		return d, nil, err
	}
	return d, []string{"meshes", mesh, d.Plural, name}, nil
}

func checkSegment(what, s string) error {
	switch s {
	case "":
		return fmt.Errorf("a %s is required", what)
	case ".", "..":
		return fmt.Errorf("invalid %s %q", what, s)
	}
	return nil
}

// endpoint builds the URL of an API path; every segment is escaped.
func (c *Client) endpoint(query url.Values, segs ...string) string {
	var b strings.Builder
	b.WriteString(c.base.String())
	if len(segs) == 0 {
		b.WriteByte('/')
	}
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	if len(query) > 0 {
		b.WriteByte('?')
		b.WriteString(query.Encode())
	}
	return b.String()
}

// listAll reads every page of a collection into one slice.
func listAll[T any](ctx context.Context, c *Client, segs []string, decode func(json.RawMessage) (T, error)) ([]T, error) {
	out := []T{}
	err := eachPage(ctx, c, segs, nil, decode, func(page pageOf[T]) error {
		out = append(out, page.items...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pageOf is one decoded page of a collection.
type pageOf[T any] struct {
	items []T
	// total is the collection's size the control plane reported.
	total int
}

// eachPage reads a collection page by page, from the first page (query, or
// the client's page size when nil), handing each decoded page to fn; an
// error from fn stops the reading and is returned. It follows the `next`
// link of each page by sending its query (offset, size) to the collection's
// path on this client's address, so that a control plane reporting another
// host name than the one used to reach it (behind a proxy, in a container)
// still pages correctly.
func eachPage[T any](ctx context.Context, c *Client, segs []string, query url.Values, decode func(json.RawMessage) (T, error), fn func(pageOf[T]) error) error {
	if query == nil {
		query = url.Values{}
		if c.pageSize > 0 {
			query.Set("size", strconv.Itoa(c.pageSize))
		}
	}
	seen := map[string]bool{query.Encode(): true}
	for {
		u := c.endpoint(query, segs...)
		resp, body, err := c.do(ctx, http.MethodGet, u, nil, nil)
		if err != nil {
			return err
		}
		var page struct {
			Total int               `json:"total"`
			Items []json.RawMessage `json:"items"`
			Next  *string           `json:"next"`
		}
		if err := decodeBody(resp, http.MethodGet, u, body, &page); err != nil {
			return err
		}
		decoded := pageOf[T]{items: make([]T, 0, len(page.Items)), total: page.Total}
		for i, raw := range page.Items {
			v, err := decode(raw)
			if err != nil {
				return fmt.Errorf("GET %s: cannot read item %d of the answer (is the control plane newer than this client?): %w", u, i, err)
			}
			decoded.items = append(decoded.items, v)
		}
		if err := fn(decoded); err != nil {
			return err
		}
		if page.Next == nil || *page.Next == "" {
			return nil
		}
		next, err := url.Parse(*page.Next)
		if err != nil {
			return fmt.Errorf("GET %s: invalid next page link %q: %w", u, *page.Next, err)
		}
		query = next.Query()
		if len(page.Items) == 0 || seen[query.Encode()] {
			return fmt.Errorf("GET %s: the control plane's paging does not advance (next page %q); stopping", u, *page.Next)
		}
		seen[query.Encode()] = true
	}
}

// do sends a request and reads its answer. An answer other than 2xx is
// returned as an *Error.
func (c *Client) do(ctx context.Context, method, u string, payload []byte, hdr http.Header) (*http.Response, []byte, error) {
	parent := ctx
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, c.transportError(parent, ctx, method, u, err)
	}
	defer resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	limit := int64(maxBodyBytes)
	if !ok {
		limit = maxErrorBodyBytes
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, c.transportError(parent, ctx, method, u, err)
	}
	if int64(len(data)) > limit {
		if ok {
			return nil, nil, fmt.Errorf("%s %s: the answer is larger than %d bytes", method, u, limit)
		}
		data = data[:limit]
	}
	if !ok {
		return nil, nil, decodeError(resp, method, u, data)
	}
	return resp, data, nil
}

// transportError explains a failed exchange: the caller's context ending,
// this client's timeout, or the network.
func (c *Client) transportError(parent, ctx context.Context, method, u string, err error) error {
	if parent.Err() != nil {
		return fmt.Errorf("%s %s: %w", method, u, parent.Err())
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: the control plane did not answer within %s", method, u, c.timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("cannot reach the control plane at %s (%s %s): %w", c.base.Redacted(), method, u, err)
}

// decodeError turns an answer other than 2xx into an *Error.
func decodeError(resp *http.Response, method, u string, body []byte) *Error {
	e := &Error{Status: resp.StatusCode, Method: method, URL: u}
	var eb struct {
		Title   string           `json:"title"`
		Details string           `json:"details"`
		Causes  []resource.Cause `json:"causes"`
	}
	if err := json.Unmarshal(body, &eb); err == nil && (eb.Title != "" || eb.Details != "" || len(eb.Causes) > 0) {
		e.Title, e.Details, e.Causes = eb.Title, eb.Details, eb.Causes
		return e
	}
	e.Title = http.StatusText(resp.StatusCode)
	e.Details = foreignAnswer(resp, method, u, body)
	return e
}

// foreignAnswer describes an answer that is not the API's JSON.
func foreignAnswer(resp *http.Response, method, u string, body []byte) string {
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		ct = mt
	}
	if ct == "" {
		ct = "no Content-Type"
	}
	msg := fmt.Sprintf("%s %s answered with %s, not with the control plane API's JSON (is a proxy or another server at this address?)", method, u, ct)
	if s := snippet(body); s != "" {
		msg += ": " + s
	}
	return msg
}

// snippet returns the start of a body on one line, without control characters.
func snippet(body []byte) string {
	fields := strings.FieldsFunc(string(body), func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) })
	s := []rune(strings.Join(fields, " "))
	if len(s) > maxSnippetRunes {
		return string(s[:maxSnippetRunes]) + "…"
	}
	return string(s)
}

// decodeBody decodes a 2xx JSON answer.
func decodeBody(resp *http.Response, method, u string, body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || len(bytes.TrimSpace(body)) == 0 {
			return errors.New(foreignAnswer(resp, method, u, body))
		}
		return fmt.Errorf("%s %s: cannot read the answer: %w", method, u, err)
	}
	return nil
}

func decodeObject(resp *http.Response, method, u string, body []byte) (*resource.Object, error) {
	if !json.Valid(body) {
		return nil, errors.New(foreignAnswer(resp, method, u, body))
	}
	var o resource.Object
	if err := json.Unmarshal(body, &o); err != nil {
		return nil, fmt.Errorf("%s %s: cannot read the resource in the answer (is the control plane newer than this client?): %w", method, u, err)
	}
	return &o, nil
}

// parseETag reads a resource version from an ETag (`"3"` or `W/"3"`); 0 when absent.
func parseETag(tag string) int64 {
	tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
	v, err := strconv.ParseInt(strings.Trim(tag, `"`), 10, 64)
	if err != nil {
		return 0
	}
	return v
}
