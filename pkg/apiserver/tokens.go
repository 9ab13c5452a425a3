package apiserver

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/strictjson"
)

// dataplaneTokenRequest is the body of POST /tokens/dataplane.
type dataplaneTokenRequest struct {
	Mesh string `json:"mesh"`
	Name string `json:"name"`
	// Tags are the values the proxy's inbounds may carry, by tag key ("*":
	// any value); kuma.io/service is required unless the control plane
	// accepts untagged tokens. Without tags the services of the stored
	// Dataplane mesh/name are taken.
	Tags     map[string][]string `json:"tags"`
	ValidFor string              `json:"validFor"`
}

// userTokenRequest is the body of POST /tokens/user.
type userTokenRequest struct {
	Name     string   `json:"name"`
	Groups   []string `json:"groups"`
	ValidFor string   `json:"validFor"`
}

const tokenErrorTitle = "Could not issue a token"

func (s *Server) dataplaneToken(w http.ResponseWriter, r *http.Request) {
	var req dataplaneTokenRequest
	if !s.readTokenRequest(w, r, &req) {
		return
	}
	var causes []resource.Cause
	causes = requireText(causes, "mesh", req.Mesh)
	causes = requireText(causes, "name", req.Name)
	causes = s.checkTokenTags(causes, req.Tags)
	validFor, causes := validity(causes, req.ValidFor)
	if len(causes) > 0 {
		s.invalid(w, tokenErrorTitle, "Request is not valid", causes)
		return
	}
	tags, from := req.Tags, "request"
	if len(tags) == 0 {
		dp, err := s.opts.Reader.Get(r.Context(), resource.KindDataplane, resource.Key{Mesh: req.Mesh, Name: req.Name})
		switch {
		case err == nil && len(dp.Dataplane().Services()) > 0:
			tags, from = map[string][]string{resource.ServiceTag: dp.Dataplane().Services()}, "stored Dataplane"
		case err != nil && !errors.Is(err, store.ErrNotFound):
			s.storeError(w, err)
			return
		case !s.opts.AllowUntaggedDataplaneTokens:
			writeError(w, http.StatusBadRequest, tokenErrorTitle, "Request is not valid", []resource.Cause{{Field: "tags", Message: fmt.Sprintf(
				"no Dataplane %q is stored in mesh %q to take its services from: name the services its proxy may serve, "+
					`such as {"kuma.io/service":["backend"]} (kumactl generate dataplane-token --tag kuma.io/service=backend), or ["*"] for any service`,
				clip(req.Name), clip(req.Mesh))}})
			return
		default:
			from = "none: the control plane accepts untagged tokens"
		}
	}
	token, err := s.opts.Tokens.IssueDataplane(req.Mesh, req.Name, tags, validFor)
	if err != nil {
		writeError(w, http.StatusBadRequest, tokenErrorTitle, err.Error(), nil)
		return
	}
	s.opts.Log.Info("issued a dataplane token", "mesh", req.Mesh, "dataplane", req.Name, "tags", tags, "tags_from", from,
		"valid_for", validFor.String(), "by", who(r))
	writeToken(w, token)
}

// checkTokenTags validates the tags of a dataplane token request.
func (s *Server) checkTokenTags(causes []resource.Cause, tags map[string][]string) []resource.Cause {
	if len(tags) == 0 {
		return causes
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field := fmt.Sprintf("tags[%q]", clip(k))
		if !resource.ValidTagKey(k) {
			causes = append(causes, resource.Cause{Field: field, Message: resource.TagKeyMessage})
		}
		vs := tags[k]
		if len(vs) == 0 {
			causes = append(causes, resource.Cause{Field: field, Message: `must list at least one value ("*" allows any)`})
		}
		for i, v := range vs {
			vf := field + "[" + strconv.Itoa(i) + "]"
			switch {
			case v == authn.AnyValue && len(vs) > 1:
				causes = append(causes, resource.Cause{Field: vf, Message: `"*" allows any value and cannot be listed with others`})
			case v != authn.AnyValue && !resource.ValidTagValue(v):
				causes = append(causes, resource.Cause{Field: vf, Message: resource.TagValueMessage})
			}
		}
	}
	if _, ok := tags[resource.ServiceTag]; !ok && !s.opts.AllowUntaggedDataplaneTokens {
		causes = append(causes, resource.Cause{Field: "tags", Message: `must include "kuma.io/service": the services the proxy may serve, or ["*"] for any`})
	}
	return causes
}

func (s *Server) userToken(w http.ResponseWriter, r *http.Request) {
	var req userTokenRequest
	if !s.readTokenRequest(w, r, &req) {
		return
	}
	var causes []resource.Cause
	causes = requireText(causes, "name", req.Name)
	for i, g := range req.Groups {
		causes = requireText(causes, "groups["+strconv.Itoa(i)+"]", g)
	}
	validFor, causes := validity(causes, req.ValidFor)
	if len(causes) > 0 {
		s.invalid(w, tokenErrorTitle, "Request is not valid", causes)
		return
	}
	token, err := s.opts.Tokens.IssueUser(req.Name, req.Groups, validFor)
	if err != nil {
		writeError(w, http.StatusBadRequest, tokenErrorTitle, err.Error(), nil)
		return
	}
	s.opts.Log.Info("issued a user token", "user", req.Name, "groups", req.Groups, "valid_for", validFor.String(), "by", who(r))
	writeToken(w, token)
}

// readTokenRequest decodes a token request strictly; false when it answered
// an error.
func (s *Server) readTokenRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	if s.opts.Tokens == nil {
		writeError(w, http.StatusNotImplemented, tokenErrorTitle, "this API server issues no tokens", nil)
		return false
	}
	return s.readJSON(w, r, v, tokenErrorTitle)
}

// readJSON decodes a request body strictly into v; false when it answered
// an error (titled title) naming every failing field.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any, title string) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, "Could not read the request body", err.Error(), nil)
		return false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		writeError(w, http.StatusBadRequest, title, "the request body must be a JSON object", nil)
		return false
	}
	if err := strictjson.Decode(body, v); err != nil {
		var fes strictjson.Errors
		if errors.As(err, &fes) {
			causes := make([]resource.Cause, len(fes))
			for i, fe := range fes {
				causes[i] = resource.Cause{Field: fe.Path, Message: fe.Message}
			}
			s.invalid(w, title, "Request is not valid", causes)
			return false
		}
		writeError(w, http.StatusBadRequest, title, err.Error(), nil)
		return false
	}
	return true
}

func requireText(causes []resource.Cause, field, v string) []resource.Cause {
	switch {
	case v == "":
		return append(causes, resource.Cause{Field: field, Message: "must not be empty"})
	case len(v) > 253:
		return append(causes, resource.Cause{Field: field, Message: "must be at most 253 bytes"})
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return append(causes, resource.Cause{Field: field, Message: "must not contain control characters"})
	}
	return causes
}

// validity reads validFor: a Go duration such as 24h; empty or 0 means the
// token never expires.
func validity(causes []resource.Cause, s string) (time.Duration, []resource.Cause) {
	if s == "" {
		return 0, causes
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, append(causes, resource.Cause{Field: "validFor", Message: "must be a duration such as 24h or 30m, got " + strconv.Quote(clip(s))})
	}
	if d < 0 {
		return 0, append(causes, resource.Cause{Field: "validFor", Message: "must not be negative, got " + strconv.Quote(clip(s))})
	}
	return d, causes
}

func writeToken(w http.ResponseWriter, token string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, token)
}

// who names the caller in logs.
func who(r *http.Request) string {
	if u, ok := UserFrom(r.Context()); ok {
		return u.Name
	}
	return ""
}
