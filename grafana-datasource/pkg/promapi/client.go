// Package promapi asks Prometheus' HTTP API (or a Grafana datasource proxy in
// front of it) instant queries and whether it is up.
package promapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds what one answer may hold.
const maxBody = 64 << 20

// Client calls one Prometheus.
type Client struct {
	base          *url.URL
	http          *http.Client
	authorization string
}

// New is a client of the Prometheus API under base (its /api/v1/… paths are
// appended), sending authorization (a whole Authorization header value) when
// not empty.
func New(base *url.URL, httpClient *http.Client, authorization string) *Client {
	b := *base
	b.Path = strings.TrimRight(b.Path, "/")
	return &Client{base: &b, http: httpClient, authorization: authorization}
}

// Sample is one series of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// BuildInfo is Prometheus' version.
type BuildInfo struct {
	Version string `json:"version"`
}

// Error is Prometheus' answer to a bad query or a failure: its errorType
// and error.
type Error struct {
	Status int
	Type   string
	Msg    string
}

func (e *Error) Error() string {
	switch {
	case e.Type != "":
		return fmt.Sprintf("prometheus: %s: %s", e.Type, e.Msg)
	case e.Msg != "":
		return fmt.Sprintf("prometheus: %d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
	}
	return fmt.Sprintf("prometheus: %d %s", e.Status, http.StatusText(e.Status))
}

// BuildInfo reads /api/v1/status/buildinfo: it tells Prometheus is up and
// answers its API.
func (c *Client) BuildInfo(ctx context.Context) (BuildInfo, error) {
	var b BuildInfo
	err := c.call(ctx, http.MethodGet, "/api/v1/status/buildinfo", nil, &b)
	return b, err
}

// Query evaluates an instant query at the given time; its answer must be a
// vector.
func (c *Client) Query(ctx context.Context, query string, at time.Time) ([]Sample, error) {
	form := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := c.call(ctx, http.MethodPost, "/api/v1/query", form, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus: %s: the answer is a %q, not a vector", query, data.ResultType)
	}
	out := make([]Sample, 0, len(data.Result))
	for _, r := range data.Result {
		s, ok := r.Value[1].(string)
		if !ok {
			return nil, fmt.Errorf("prometheus: %s: a sample value is %v, not a string", query, r.Value[1])
		}
		v, err := parseValue(s)
		if err != nil {
			return nil, fmt.Errorf("prometheus: %s: %w", query, err)
		}
		out = append(out, Sample{Labels: r.Metric, Value: v})
	}
	return out, nil
}

// parseValue parses a sample value as Prometheus writes it.
func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("sample value %q: %w", s, err)
	}
	return v, nil
}

// call sends a request to the API and decodes the data of its answer.
func (c *Client) call(ctx context.Context, method, path string, form url.Values, data any) error {
	u := *c.base
	u.Path += path
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	if c.authorization != "" {
		req.Header.Set("Authorization", c.authorization)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("prometheus at %s is not reachable: %w", c.base.Redacted(), err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("prometheus: %s: reading the answer: %w", path, err)
	}
	if len(raw) > maxBody {
		return fmt.Errorf("prometheus: %s: the answer is larger than %d bytes", path, maxBody)
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || env.Status == "" {
		if res.StatusCode != http.StatusOK {
			return &Error{Status: res.StatusCode, Msg: firstLine(raw)}
		}
		return fmt.Errorf("prometheus: %s: the answer is not Prometheus' API JSON (is %s a Prometheus?)", path, c.base.Redacted())
	}
	if env.Status != "success" {
		return &Error{Status: res.StatusCode, Type: env.ErrorType, Msg: env.Error}
	}
	if err := json.Unmarshal(env.Data, data); err != nil {
		return fmt.Errorf("prometheus: %s: unexpected data: %w", path, err)
	}
	return nil
}

// firstLine is the start of a non-JSON error answer, for the message.
func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
