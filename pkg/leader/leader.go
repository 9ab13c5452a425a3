// Package leader decides which of several control-plane replicas on one
// store does the work that must happen once: creating each mesh's CA, the
// default mesh, the cleanup of dead dataplanes, issuing the admin token. An
// Elector campaigns; the control plane runs that work inside lead, whose
// context ends when leadership is lost.
package leader

import "context"

// Elector decides whether this instance leads. Run campaigns until ctx is
// done. Each time this instance becomes the leader it calls lead with a
// context cancelled as soon as leadership is lost (or ctx is done), and
// waits for lead to return before campaigning again.
type Elector interface {
	Run(ctx context.Context, lead func(ctx context.Context)) error
}

// Always is the elector of a store that serves one control plane (SQLite,
// memory): it leads at once, until ctx is done.
type Always struct{}

// Run calls lead once with ctx and returns when lead does.
func (Always) Run(ctx context.Context, lead func(ctx context.Context)) error {
	if ctx.Err() != nil {
		return nil
	}
	lead(ctx)
	return nil
}

// LeadsAtOnce tells whether e leads from the start without campaigning
// (Always): the control plane then runs the first-start steps before it
// serves, as a single control plane always did.
func LeadsAtOnce(e Elector) bool {
	_, ok := e.(Always)
	return ok
}
