package authn

import (
	"encoding/json"
	"strings"
	"time"
)

// serviceAccountUserPrefix starts the user name of a Kubernetes
// ServiceAccount: system:serviceaccount:<namespace>:<name>.
const serviceAccountUserPrefix = "system:serviceaccount:"

// ServiceAccountUser returns the namespace and name of the Kubernetes
// ServiceAccount a user name (a TokenReview's status.user.username, a
// ServiceAccount token's sub) stands for; ok is false for any other user.
func ServiceAccountUser(username string) (namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(username, serviceAccountUserPrefix)
	if !found {
		return "", "", false
	}
	namespace, name, found = strings.Cut(rest, ":")
	if !found || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}

// ServiceAccountToken is what a Kubernetes ServiceAccount token says.
type ServiceAccountToken struct {
	Namespace      string
	ServiceAccount string
	// Pod is the Pod a projected token is bound to; "" when it is bound to
	// none.
	Pod string
	// ExpiresAt is the token's exp; zero when it never expires.
	ExpiresAt time.Time
}

// InspectServiceAccountToken reads a Kubernetes ServiceAccount token WITHOUT
// checking its signature or its times: for a proxy to show which token it
// holds, never to authorize anything (the control plane asks the API server,
// with a TokenReview).
func InspectServiceAccountToken(token string) (ServiceAccountToken, error) {
	if len(token) > MaxTokenBytes {
		return ServiceAccountToken{}, invalid("longer than %d bytes", MaxTokenBytes)
	}
	if strings.Count(token, ".") != 2 {
		return ServiceAccountToken{}, invalid("not a compact JWT (three base64url parts separated by dots)")
	}
	payload, err := decodePayload(token[:strings.LastIndexByte(token, '.')])
	if err != nil {
		return ServiceAccountToken{}, err
	}
	var c struct {
		Sub        string `json:"sub"`
		Exp        *int64 `json:"exp"`
		Kubernetes struct {
			Pod struct {
				Name string `json:"name"`
			} `json:"pod"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return ServiceAccountToken{}, invalid("payload is not a JSON object of the expected claims")
	}
	ns, name, ok := ServiceAccountUser(c.Sub)
	if !ok {
		return ServiceAccountToken{}, invalid("its subject %q is not a Kubernetes ServiceAccount (system:serviceaccount:<namespace>:<name>)", clip(c.Sub))
	}
	return ServiceAccountToken{Namespace: ns, ServiceAccount: name, Pod: c.Kubernetes.Pod.Name, ExpiresAt: unixOrZero(c.Exp)}, nil
}
