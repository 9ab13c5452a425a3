// Package apiserver serves the control plane's REST API (compat.md §6):
// resources of every kind with paging, dataplane overviews with their online
// status, service insights and zones, with Kuma's JSON shapes and error bodies,
// and token issuing, behind authentication and authorization.
//
// Every request is identified before routing: over HTTPS, a client
// certificate identical to one of Options.AdminClientCerts makes an admin
// (any other presented certificate is refused with 401); a bearer user token
// names its user (an invalid or expired one is refused with 401 everywhere);
// without either, a loopback caller is admin when Options.LocalhostIsAdmin is
// set, and anyone else is anonymous. Reads of non-sensitive kinds and the overviews
// are Public; writes, sensitive kinds (secrets) and tokens are AdminOnly.
package apiserver

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Paging limits of list endpoints.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	maxBodyBytes    = 1 << 20
)

// Reader is the read side of the store the API needs.
type Reader interface {
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
	List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error)
}

// Writer is the write side: validation, defaults and mesh invariants.
type Writer interface {
	Apply(ctx context.Context, obj *resource.Object, ifVersion int64) (*manager.Result, error)
	Delete(ctx context.Context, kind resource.Kind, key resource.Key, ifVersion int64) error
}

// Options configure a Server.
type Options struct {
	// Reader reads resources, dataplane insights and control-plane
	// heartbeats (the store).
	Reader Reader
	Writer Writer
	Log    *slog.Logger
	// Now is the clock that judges heartbeats (time.Now by default).
	Now        func() time.Time
	Registerer prometheus.Registerer
	Version    string
	InstanceID string
	// Zone is the name of the single zone this control plane runs.
	Zone string
	// Tokens verifies the user tokens of requests and issues tokens
	// (POST /tokens/user, /tokens/dataplane): the control plane's
	// *authn.Issuer. When nil, no token is accepted or issued, every
	// loopback caller is admin and everyone else anonymous.
	Tokens Tokens
	// LocalhostIsAdmin makes a request from a loopback address (127.0.0.0/8,
	// ::1, as seen in its RemoteAddr) without an Authorization header admin
	// (apiServer.authn.localhostIsAdmin). It needs Tokens: without them
	// loopback callers are admin anyway. Behind a reverse proxy on the same
	// host every request comes from loopback: turn it off there.
	LocalhostIsAdmin bool
	// MaxErrorCauses bounds the causes listed in a 400 answer (default
	// DefaultMaxErrorCauses); the rest are summed up in one last cause,
	// "and K more".
	MaxErrorCauses int
	// AdminClientCerts are the certificates (apiServer.auth.clientCertsDir,
	// see LoadClientCerts) that make an HTTPS client presenting one of them,
	// byte for byte, an admin. Serve HTTPS with TLSConfig so that clients are
	// asked for them.
	AdminClientCerts []*x509.Certificate
	// AllowUntaggedDataplaneTokens lets POST /tokens/dataplane issue a
	// token without kuma.io/service (dpServer.authn.dpProxy.dpToken.allowUntaggedTokens:
	// the dataplane server then accepts such tokens for any service).
	AllowUntaggedDataplaneTokens bool
	// KubernetesKinds are the kinds kept as Kubernetes custom resources
	// (Kubernetes mode): they are read here and written with kubectl; the
	// API refuses to write them (405 with KubectlMessage), as the
	// reference system does.
	KubernetesKinds []resource.Kind
}

// KubectlMessage is the answer to a write of a kind kept in Kubernetes.
const KubectlMessage = "On Kubernetes you cannot change the state of Kuma resources with 'kumactl apply' or via the HTTP API." +
	" As a best practice, you should always be using 'kubectl apply' instead." +
	" You can still use 'kumactl' or the HTTP API to make read-only operations. On Universal this limitation does not apply."

// DefaultMaxErrorCauses: enough to fix a resource in a few rounds, small
// enough that an answer stays a few KiB however broken the input.
const DefaultMaxErrorCauses = 20

// Server is the REST API.
type Server struct {
	opts        Options
	mux         *http.ServeMux
	metrics     *metrics
	clientCerts clientCerts
}

// New builds the API; register its metrics on opts.Registerer (if set).
func New(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Zone == "" {
		opts.Zone = "Standalone"
	}
	if opts.MaxErrorCauses <= 0 {
		opts.MaxErrorCauses = DefaultMaxErrorCauses
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), metrics: m, clientCerts: newClientCerts(opts.AdminClientCerts)}
	s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler: it identifies the caller, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, s.identify(r)))
	s.mux.ServeHTTP(rec, r)
	handler := r.Pattern
	if handler == "" {
		handler = "unmatched"
	} else if _, p, ok := strings.Cut(handler, " "); ok {
		handler = p
	}
	s.metrics.observe(handler, r.Method, rec.status, time.Since(start))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Handle registers an endpoint with who may use it; it is how an endpoint is
// added to this server, from inside the package (routes) or from outside
// (before serving). The caller is identified before h runs (UserFrom tells
// who it is); access AdminOnly answers 401 to anonymous callers and 403 to
// other non-admins without calling h. For example, an admin-only
//
//	api.Handle("POST /meshes/{mesh}/scraper-certificate", apiserver.AdminOnly, h)
//
// pattern is an http.ServeMux pattern with a method.
func (s *Server) Handle(pattern string, access Access, h http.Handler) {
	s.mux.Handle(pattern, guard(access, h))
}

func (s *Server) handle(pattern string, access Access, h http.HandlerFunc) {
	s.Handle(pattern, access, h)
}

func (s *Server) routes() {
	s.handle("GET /{$}", Public, s.index)
	for _, d := range resource.Descriptors() {
		read := Public
		if d.Sensitive {
			read = AdminOnly
		}
		item := "/" + d.Plural + "/{name}"
		if d.Scoped {
			item = "/meshes/{mesh}" + item
			s.handle("GET /meshes/{mesh}/"+d.Plural, read, s.list(d))
		}
		s.handle("GET "+item, read, s.get(d))
		s.handle("GET /"+d.Plural, read, s.list(d))
		if d.ReadOnly {
			s.handle("PUT "+item, Public, readOnly(d))
			s.handle("DELETE "+item, Public, readOnly(d))
			continue
		}
		if slices.Contains(s.opts.KubernetesKinds, d.Kind) {
			s.handle("PUT "+item, Public, useKubectl)
			s.handle("DELETE "+item, Public, useKubectl)
			continue
		}
		s.handle("PUT "+item, AdminOnly, s.put(d))
		s.handle("DELETE "+item, AdminOnly, s.delete(d))
	}
	s.handle("GET /meshes/{mesh}/dataplanes+insights", Public, s.dataplaneOverviews)
	s.handle("GET /meshes/{mesh}/dataplanes+insights/{name}", Public, s.dataplaneOverview)
	s.handle("GET /meshes/{mesh}/service-insights", Public, s.serviceInsights)
	s.handle("GET /zones", Public, s.zones)
	s.handle("POST /tokens/dataplane", AdminOnly, s.dataplaneToken)
	s.handle("POST /tokens/user", AdminOnly, s.userToken)
	s.handle("POST /meshes/{mesh}/scraper-certificate", AdminOnly, s.scraperCertificate)
	s.handle("/", Public, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not found", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path), nil)
	})
}

// readOnly answers writes of a kind the control plane keeps itself.
func readOnly(d resource.Descriptor) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed",
			fmt.Sprintf("%s resources are written by the control plane only; they can be read, not %s", d.Kind, strings.ToLower(r.Method)), nil)
	}
}

// useKubectl answers writes of a kind kept in Kubernetes.
func useKubectl(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", "GET")
	writeError(w, http.StatusMethodNotAllowed, "Method not allowed", KubectlMessage, nil)
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	host, _ := os.Hostname()
	writeJSON(w, http.StatusOK, map[string]string{
		"hostname":   host,
		"tagline":    "Kuma",
		"version":    s.opts.Version,
		"instanceId": s.opts.InstanceID,
	})
}

func keyOf(d resource.Descriptor, r *http.Request) resource.Key {
	k := resource.Key{Name: r.PathValue("name")}
	if d.Scoped {
		k.Mesh = r.PathValue("mesh")
	}
	return k
}

func (s *Server) get(d resource.Descriptor) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		obj, err := s.opts.Reader.Get(r.Context(), d.Kind, keyOf(d, r))
		if err != nil {
			s.storeError(w, err)
			return
		}
		w.Header().Set("ETag", etag(obj.Meta.Version))
		writeJSON(w, http.StatusOK, obj)
	}
}

func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// ifMatch reads an If-Match header holding one version; 0 when absent.
func ifMatch(r *http.Request) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return 0, nil
	}
	h = strings.TrimPrefix(h, "W/")
	v, err := strconv.ParseInt(strings.Trim(h, `"`), 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("If-Match must hold one resource version such as \"3\", got %q", r.Header.Get("If-Match"))
	}
	return v, nil
}

func (s *Server) put(d resource.Descriptor) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := keyOf(d, r)
		version, err := ifMatch(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Bad request", err.Error(), nil)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			writeError(w, http.StatusBadRequest, "Could not read the request body", err.Error(), nil)
			return
		}
		obj, err := resource.DecodeJSON(body)
		if err != nil {
			s.inputError(w, err)
			return
		}
		var causes []resource.Cause
		if obj.Meta.Kind != d.Kind {
			causes = append(causes, resource.Cause{Field: "type", Message: fmt.Sprintf("must be %s for this path, got %s", d.Kind, obj.Meta.Kind)})
		}
		if obj.Meta.Name == "" {
			obj.Meta.Name = key.Name
		} else if obj.Meta.Name != key.Name {
			causes = append(causes, resource.Cause{Field: "name", Message: fmt.Sprintf("%q does not match the name in the path (%q)", obj.Meta.Name, key.Name)})
		}
		if d.Scoped {
			if obj.Meta.Mesh == "" {
				obj.Meta.Mesh = key.Mesh
			} else if obj.Meta.Mesh != key.Mesh {
				causes = append(causes, resource.Cause{Field: "mesh", Message: fmt.Sprintf("%q does not match the mesh in the path (%q)", obj.Meta.Mesh, key.Mesh)})
			}
		}
		if len(causes) > 0 {
			s.inputError(w, &resource.ValidationError{Causes: causes})
			return
		}
		res, err := s.opts.Writer.Apply(r.Context(), obj, version)
		if err != nil {
			s.writeErrorFor(w, err)
			return
		}
		status := http.StatusOK
		if res.Created {
			status = http.StatusCreated
		}
		w.Header().Set("ETag", etag(res.Object.Meta.Version))
		writeJSON(w, status, res.Object)
	}
}

func (s *Server) delete(d resource.Descriptor) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		version, err := ifMatch(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Bad request", err.Error(), nil)
			return
		}
		if err := s.opts.Writer.Delete(r.Context(), d.Kind, keyOf(d, r), version); err != nil {
			s.storeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{})
	}
}

// page reads size and offset.
func page(r *http.Request) (size, offset int, err error) {
	size = DefaultPageSize
	if v := r.URL.Query().Get("size"); v != "" {
		size, err = strconv.Atoi(v)
		if err != nil || size < 1 || size > MaxPageSize {
			return 0, 0, fmt.Errorf("size must be an integer from 1 to %d, got %q", MaxPageSize, v)
		}
	}
	if v := r.URL.Query().Get("offset"); v != "" {
		offset, err = strconv.Atoi(v)
		if err != nil || offset < 0 {
			return 0, 0, fmt.Errorf("offset must be a non-negative integer, got %q", v)
		}
	}
	return size, offset, nil
}

func nextURL(r *http.Request, next, size int) *string {
	if next < 0 {
		return nil
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	q := url.Values{}
	for k, v := range r.URL.Query() {
		q[k] = v
	}
	q.Set("offset", strconv.Itoa(next))
	q.Set("size", strconv.Itoa(size))
	u := scheme + "://" + r.Host + r.URL.Path + "?" + q.Encode()
	return &u
}

type listBody[T any] struct {
	Total int     `json:"total"`
	Items []T     `json:"items"`
	Next  *string `json:"next"`
}

func (s *Server) list(d resource.Descriptor) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		size, offset, err := page(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Bad request", err.Error(), nil)
			return
		}
		mesh := r.PathValue("mesh")
		if mesh != "" {
			if _, err := s.opts.Reader.Get(r.Context(), resource.KindMesh, resource.Key{Name: mesh}); err != nil {
				s.storeError(w, err)
				return
			}
		}
		res, err := s.opts.Reader.List(r.Context(), d.Kind, store.ListOptions{Mesh: mesh, Limit: size, Offset: offset})
		if err != nil {
			s.storeError(w, err)
			return
		}
		items := res.Items
		if items == nil {
			items = []*resource.Object{}
		}
		writeJSON(w, http.StatusOK, listBody[*resource.Object]{Total: res.Total, Items: items, Next: nextURL(r, res.NextOffset, size)})
	}
}

func (s *Server) zones(w http.ResponseWriter, r *http.Request) {
	type zone struct {
		Type    string `json:"type"`
		Name    string `json:"name"`
		Enabled bool   `json:"enabled"`
	}
	writeJSON(w, http.StatusOK, listBody[zone]{Total: 1, Items: []zone{{Type: "Zone", Name: s.opts.Zone, Enabled: true}}})
}

// writeErrorFor maps a write error: invalid input → 400, the rest as storeError.
func (s *Server) writeErrorFor(w http.ResponseWriter, err error) {
	if resource.IsDecodeError(err) {
		s.inputError(w, err)
		return
	}
	s.storeError(w, err)
}

func (s *Server) inputError(w http.ResponseWriter, err error) {
	var ve *resource.ValidationError
	if errors.As(err, &ve) {
		s.invalid(w, "Could not process a resource", "Resource is not valid", ve.Causes)
		return
	}
	writeError(w, http.StatusBadRequest, "Could not process a resource", err.Error(), nil)
}

func (s *Server) storeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "Could not find a resource", err.Error(), nil)
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "Could not write a resource", err.Error(), nil)
	case errors.Is(err, store.ErrAlreadyExists):
		writeError(w, http.StatusConflict, "Could not write a resource", err.Error(), nil)
	case errors.Is(err, context.Canceled):
		writeError(w, 499, "Request cancelled", err.Error(), nil)
	default:
		s.opts.Log.Error("request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "Internal server error", "the request failed; see the control plane's log", nil)
	}
}

// invalid answers 400 with at most MaxErrorCauses causes.
func (s *Server) invalid(w http.ResponseWriter, title, details string, causes []resource.Cause) {
	writeError(w, http.StatusBadRequest, title, details, capCauses(causes, s.opts.MaxErrorCauses))
}

// capCauses keeps the first n causes and sums up the rest in one more.
func capCauses(causes []resource.Cause, n int) []resource.Cause {
	if len(causes) <= n {
		return causes
	}
	return append(causes[:n:n], resource.Cause{Message: fmt.Sprintf("and %d more", len(causes)-n)})
}

type errorBody struct {
	Title   string           `json:"title"`
	Details string           `json:"details"`
	Causes  []resource.Cause `json:"causes,omitempty"`
}

func writeError(w http.ResponseWriter, status int, title, details string, causes []resource.Cause) {
	writeJSON(w, status, errorBody{Title: title, Details: details, Causes: causes})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"title":"Internal server error","details":"could not encode the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	_, _ = w.Write([]byte("\n"))
}
