package podcontroller

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// reportedProblems remembers, per Pod, the problems already reported as
// Events, so that each distinct problem makes one Event however often the
// Pod is reconciled. A Pod whose problems are gone is forgotten, so a problem
// that comes back is reported again.
type reportedProblems struct {
	mu   sync.Mutex
	pods map[types.NamespacedName]reportedPod
}

type reportedPod struct {
	uid      types.UID
	problems map[Problem]struct{}
}

func newReportedProblems() *reportedProblems {
	return &reportedProblems{pods: map[types.NamespacedName]reportedPod{}}
}

// news records the Pod's current problems and returns those not reported
// before.
func (r *reportedProblems) news(key types.NamespacedName, uid types.UID, current []Problem) []Problem {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(current) == 0 {
		delete(r.pods, key)
		return nil
	}
	before := r.pods[key]
	if before.uid != uid {
		before.problems = nil // another Pod of the same name
	}
	now := make(map[Problem]struct{}, len(current))
	var out []Problem
	for _, p := range current {
		if _, seen := now[p]; seen {
			continue
		}
		now[p] = struct{}{}
		if _, old := before.problems[p]; !old {
			out = append(out, p)
		}
	}
	r.pods[key] = reportedPod{uid: uid, problems: now}
	return out
}

// forget drops what was reported of a Pod that is gone.
func (r *reportedProblems) forget(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.pods, key)
	r.mu.Unlock()
}
