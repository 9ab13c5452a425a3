package podcontroller

import (
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func TestReportedProblemsOncePerDistinctProblem(t *testing.T) {
	r := newReportedProblems()
	key := types.NamespacedName{Namespace: "ns", Name: "pod"}
	port := Problem{Reason: ReasonInvalidAnnotation, Key: MetricsPort, Message: `"x" is not a port number (1-65535)`}
	path := Problem{Reason: ReasonInvalidAnnotation, Key: MetricsPath, Message: `"y" must start with '/'`}

	assert.Equal(t, []Problem{port}, r.news(key, "uid-1", []Problem{port, port}), "a duplicate in one reconcile is one Event")
	assert.Empty(t, r.news(key, "uid-1", []Problem{port}), "reconciling again reports nothing new")
	assert.Equal(t, []Problem{path}, r.news(key, "uid-1", []Problem{port, path}), "only the new problem")
	assert.Empty(t, r.news(key, "uid-1", []Problem{path, port}))

	other := types.NamespacedName{Namespace: "ns", Name: "other"}
	assert.Equal(t, []Problem{port}, r.news(other, "uid-2", []Problem{port}), "another Pod is told too")

	assert.Empty(t, r.news(key, "uid-1", nil), "fixed")
	assert.Equal(t, []Problem{port}, r.news(key, "uid-1", []Problem{port}), "broken again is reported again")

	assert.Equal(t, []Problem{port}, r.news(key, "uid-3", []Problem{port}), "a new Pod of the same name is told")

	r.forget(key)
	assert.Equal(t, []Problem{port}, r.news(key, "uid-3", []Problem{port}), "a forgotten Pod is told again")
}

func TestWithController(t *testing.T) {
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "p", UID: "u1", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	other := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "p", UID: "u0", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	plain := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "r1"}

	assert.Nil(t, withController([]metav1.OwnerReference{owner}, owner), "already right")
	assert.Nil(t, withController([]metav1.OwnerReference{plain, owner}, owner), "already right beside another owner")
	assert.Equal(t, []metav1.OwnerReference{owner}, withController(nil, owner), "no owner yet")
	assert.Equal(t, []metav1.OwnerReference{owner}, withController([]metav1.OwnerReference{other}, owner), "a former Pod of the same name")
	assert.Equal(t, []metav1.OwnerReference{plain, owner}, withController([]metav1.OwnerReference{plain, other}, owner))
	weak := owner
	weak.BlockOwnerDeletion = nil
	assert.Equal(t, []metav1.OwnerReference{owner}, withController([]metav1.OwnerReference{weak}, owner), "blockOwnerDeletion restored")
}

func TestSameJSON(t *testing.T) {
	same, err := sameJSON([]byte(`{"b":1,"a":{"y":2,"x":[1,2]}}`), []byte(`{"a":{"x":[1,2],"y":2},"b":1}`))
	assert.NoError(t, err)
	assert.True(t, same, "key order does not matter")
	same, err = sameJSON([]byte(`{"a":[2,1]}`), []byte(`{"a":[1,2]}`))
	assert.NoError(t, err)
	assert.False(t, same, "list order does")
	same, err = sameJSON(nil, []byte(`{}`))
	assert.NoError(t, err)
	assert.False(t, same)
	same, err = sameJSON([]byte(`not json`), []byte(`{}`))
	assert.NoError(t, err)
	assert.False(t, same)
}
