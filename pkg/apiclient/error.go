package apiclient

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kumametrics/mesh/pkg/resource"
)

// Error is an error answer of the control plane: its HTTP status and the
// decoded error body. When the body is not the API's JSON error (a proxy's
// HTML page, say), Title is the HTTP status text and Details says what came
// back instead.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Title is the short summary of the error body ("Could not process a resource").
	Title string
	// Details is the longer explanation ("Resource is not valid").
	Details string
	// Causes name the invalid fields, when the request carried an invalid resource.
	Causes []resource.Cause
	// Method and URL are the request that failed.
	Method string
	URL    string
}

// Error renders the title and status, then the details, on the first line,
// and one line per cause:
//
//	Could not process a resource (400): Resource is not valid
//	* metrics.backends[0].conf.port: must be in the range 1-65535
func (e *Error) Error() string {
	var b strings.Builder
	title := e.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	if title == "" {
		title = "Request failed"
	}
	fmt.Fprintf(&b, "%s (%d)", title, e.Status)
	if e.Details != "" && e.Details != e.Title {
		b.WriteString(": ")
		b.WriteString(e.Details)
	}
	for _, c := range e.Causes {
		b.WriteString("\n* ")
		if c.Field != "" {
			b.WriteString(c.Field)
			b.WriteString(": ")
		}
		b.WriteString(c.Message)
	}
	return b.String()
}

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// IsNotFound tells whether err is the control plane's 404 answer.
func IsNotFound(err error) bool { return StatusOf(err) == http.StatusNotFound }

// IsConflict tells whether err is the control plane's 409 answer (a stale
// If-Match version, or a resource that already exists).
func IsConflict(err error) bool { return StatusOf(err) == http.StatusConflict }
