package apiserver

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/strictjson"
)

// dataplaneTokenRequest is the body of POST /tokens/dataplane.
type dataplaneTokenRequest struct {
	Mesh     string `json:"mesh"`
	Name     string `json:"name"`
	ValidFor string `json:"validFor"`
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
	validFor, causes := validity(causes, req.ValidFor)
	if len(causes) > 0 {
		s.invalid(w, tokenErrorTitle, "Request is not valid", causes)
		return
	}
	token, err := s.opts.Tokens.IssueDataplane(req.Mesh, req.Name, validFor)
	if err != nil {
		writeError(w, http.StatusBadRequest, tokenErrorTitle, err.Error(), nil)
		return
	}
	s.opts.Log.Info("issued a dataplane token", "mesh", req.Mesh, "dataplane", req.Name, "valid_for", validFor.String(), "by", who(r))
	writeToken(w, token)
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
