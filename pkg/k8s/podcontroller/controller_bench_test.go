package podcontroller_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/podcontroller"
)

// benchPods and benchChanges bound the whole-controller benchmark.
const (
	benchPods    = 1000
	benchChanges = 50
	benchTimeout = 5 * time.Minute
)

// BenchmarkController1000Pods runs the pod controller against the real API
// server: 1000 Pods of one Service are created in a fresh namespace of the
// mesh (8 writers, each Pod created then given its status: Running, an IP),
// and the time from the first creation until the controller made all 1000
// Dataplanes is measured through a watch on Dataplanes. Then 50 Pods get a
// new metrics port one after the other, each change timed until its
// Dataplane carries it (p50, max). Run with -benchtime=1x.
func BenchmarkController1000Pods(b *testing.B) {
	env := k8stest.Get(b)
	for b.Loop() {
		benchOnce(b, env)
	}
}

func benchOnce(b *testing.B, env *k8stest.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	f := startController(b)
	c, err := client.NewWithWatch(env.Config(), client.Options{Scheme: k8stest.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	ns := env.Namespace(b, "bench", map[string]string{podcontroller.SidecarInjection: "enabled"})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := c.Create(ctx, svc); err != nil {
		b.Fatal(err)
	}
	var existing v1alpha1.DataplaneList
	if err := c.List(ctx, &existing, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
	w := &dataplaneWatch{c: c, ns: ns, rv: existing.ResourceVersion}
	defer w.stop()

	started := time.Now()
	jobs := make(chan int)
	errs := make(chan error, benchPods)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				errs <- createRunningPod(ctx, c, ns, i, loopback.Host())
			}
		})
	}
	go func() {
		for i := range benchPods {
			jobs <- i
		}
		close(jobs)
	}()
	wg.Wait()
	created := time.Since(started)
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}

	seen := map[string]bool{}
	for len(seen) < benchPods {
		e, err := w.next(ctx)
		if err != nil {
			b.Fatalf("%d of %d Dataplanes after %s: %v", len(seen), benchPods, time.Since(started), err)
		}
		if e.Type == watch.Added {
			seen[e.Object.(*v1alpha1.Dataplane).Name] = true
		}
	}
	all := time.Since(started)

	// One change at a time, to the Dataplane carrying it.
	var lat []time.Duration
	for i := range benchChanges {
		name := fmt.Sprintf("echo-%d", i*(benchPods/benchChanges))
		port := strconv.Itoa(2000 + i)
		pod := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
			b.Fatal(err)
		}
		pod.Annotations = map[string]string{podcontroller.MetricsPort: port}
		t0 := time.Now()
		if err := c.Update(ctx, pod); err != nil {
			b.Fatal(err)
		}
		for {
			e, err := w.next(ctx)
			if err != nil {
				b.Fatalf("change of %s not seen: %v", name, err)
			}
			if dp, isDP := e.Object.(*v1alpha1.Dataplane); isDP && e.Type == watch.Modified && dp.Name == name &&
				containsPort(dp.Spec, port) {
				break
			}
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(created.Seconds(), "s-create-1000-pods")
	b.ReportMetric(all.Seconds(), "s-all-dataplanes")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-change-p50")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "ms-change-max")
	b.Logf("1000 Pods created with status in %s; all 1000 Dataplanes %s after the first Pod; a Pod change reaches its Dataplane in %s (p50), %s (max) over %d changes; reconciles: %v",
		created.Round(time.Millisecond), all.Round(time.Millisecond), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), len(lat), f.counts(b))

	// Clean up: the Pods go (so that later benchmarks and tests do not
	// reconcile them), and the controller stops with the benchmark.
	if err := c.DeleteAllOf(context.Background(), &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
		b.Errorf("delete Pods: %v", err)
	}
}

// dataplaneWatch follows the Dataplanes of a namespace from a
// resourceVersion on, watching again where a watch ends or fails (a fresh
// API server's watch cache may be behind: "Too large resource version").
type dataplaneWatch struct {
	c  client.WithWatch
	ns string
	rv string
	w  watch.Interface
}

func (d *dataplaneWatch) next(ctx context.Context) (watch.Event, error) {
	for {
		if d.w == nil {
			w, err := d.c.Watch(ctx, &v1alpha1.DataplaneList{}, &client.ListOptions{Namespace: d.ns, Raw: &metav1.ListOptions{ResourceVersion: d.rv}})
			if err != nil {
				return watch.Event{}, fmt.Errorf("watch Dataplanes: %w", err)
			}
			d.w = w
		}
		select {
		case e, ok := <-d.w.ResultChan():
			if ok && e.Type != watch.Error {
				if m, isMeta := e.Object.(metav1.Object); isMeta {
					d.rv = m.GetResourceVersion()
				}
				return e, nil
			}
			d.stop()
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return watch.Event{}, ctx.Err()
			}
		case <-ctx.Done():
			return watch.Event{}, ctx.Err()
		}
	}
}

func (d *dataplaneWatch) stop() {
	if d.w != nil {
		d.w.Stop()
		d.w = nil
	}
}

// containsPort tells whether a Dataplane spec has a field "port": port.
func containsPort(spec []byte, port string) bool {
	return bytes.Contains(spec, []byte(`"port":`+port+`,`)) || bytes.Contains(spec, []byte(`"port":`+port+`}`))
}

func createRunningPod(ctx context.Context, c client.Client, ns string, i int, ip string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("echo-%d", i), Labels: map[string]string{"app": "echo"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "echo"}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		return fmt.Errorf("create Pod %d: %w", i, err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := c.Status().Update(ctx, pod); err != nil {
		return fmt.Errorf("status of Pod %d: %w", i, err)
	}
	return nil
}
