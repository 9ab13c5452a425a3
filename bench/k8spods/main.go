// Command k8spods measures the built kuma-cp in Kubernetes mode on a real
// kube-apiserver (internal/k8stest's: kube-apiserver on Debian's etcd, from
// the folder `make k8s-bin` prints): N Pods of one Service become Dataplanes
// through its pod controller; then, round by round, a change of one Pod
// (a label, hence a tag of its target) until the answer of a MADS long poll
// held on the previous version, as Prometheus holds it; and kuma-cp's memory.
// Everything it starts (API server, etcd, kuma-cp) stops when it ends, also
// on Ctrl-C or when -timeout passes.
//
//	go run ./bench/k8spods -kuma-cp bin/kuma-cp -pods 1000 -rounds 50
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/bench/internal/cpproc"
	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
)

func main() {
	kumaCP := flag.String("kuma-cp", "bin/kuma-cp", "kuma-cp binary")
	pods := flag.Int("pods", 1000, "Pods to create")
	rounds := flag.Int("rounds", 50, "Pod change to long-poll answer rounds")
	writers := flag.Int("writers", 8, "concurrent writers while creating the Pods")
	timeout := flag.Duration("timeout", 15*time.Minute, "bound of the whole run")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	err := run(ctx, *kumaCP, *pods, *rounds, *writers)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/k8spods:", err)
		os.Exit(1)
	}
}

// The namespace of the Pods and their Service.
const namespace = "bench"

// guideMesh is the guide's Mesh, shortcut form: metrics on, so MADS serves
// its Dataplanes.
const guideMesh = `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  metrics:
    enabledBackend: prometheus-1
    backends:
    - name: prometheus-1
      type: prometheus
`

func run(ctx context.Context, kumaCP string, n, rounds, writers int) error {
	if _, err := os.Stat(kumaCP); err != nil {
		return fmt.Errorf("%w (make build)", err)
	}
	env, err := k8stest.Start(ctx)
	if err != nil {
		return err
	}
	defer env.Stop()
	fmt.Printf("kube-apiserver v%s on Debian's etcd, serving after %s\n", k8stest.KubernetesVersion, env.StartDuration.Round(time.Millisecond))
	c, err := client.New(env.Config(), client.Options{Scheme: k8stest.Scheme()})
	if err != nil {
		return err
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "kuma-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{"kuma.io/sidecar-injection": "enabled"}}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			return err
		}
	}

	cp, err := cpproc.StartTemp(kumaCP, "KUMA_ENVIRONMENT=kubernetes", "KUBECONFIG="+env.KubeconfigPath)
	if err != nil {
		return err
	}
	defer cp.Stop()
	pid := cp.Cmd.Process.Pid
	idle := cpproc.RSS(pid)
	if _, _, err := env.Kubectl(ctx, []byte(guideMesh), "apply", "-f", "-"); err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}); err != nil {
		return err
	}

	// N Pods, each created and then given its IP (the kubelet's part), by
	// several writers.
	nets := make([]string, (n+253)/254)
	for i := range nets {
		nets[i] = loopback.Net()
	}
	podName := func(i int) string { return fmt.Sprintf("web-%04d", i) }
	began := time.Now()
	if err := cpproc.Parallel(n, writers, func(i int) error {
		return createPod(ctx, c, podName(i), fmt.Sprintf("%s.%d", nets[i/254], i%254+1))
	}); err != nil {
		return err
	}
	created := time.Since(began)

	// All Dataplanes stored, then all targets served by MADS.
	var stored, served time.Duration
	var version string
	err = waitFor(ctx, 5*time.Minute, 100*time.Millisecond, func() (bool, error) {
		if stored == 0 {
			var list v1alpha1.DataplaneList
			if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
				return false, err
			}
			if len(list.Items) < n {
				return false, nil
			}
			stored = time.Since(began)
		}
		v, count, err := cp.FetchMADS("", 0)
		if err != nil || count < n {
			return false, err
		}
		served, version = time.Since(began), v
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %d Dataplanes (stored after %s): %w", n, stored, err)
	}
	loaded := cpproc.RSS(pid)

	// Round by round: a long poll held on the current version, then one
	// Pod's label changes; the time from the change's request to the answer.
	lats, _, err := cp.ChangeToLongPoll(ctx, version, rounds, func(r int) error {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"round":"r%d"}}}`, r)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: podName(r * 7919 % n)}}
		return c.Patch(ctx, pod, client.RawPatch(types.MergePatchType, []byte(patch)))
	})
	if err != nil {
		return err
	}
	lat := lats.Answer

	fmt.Printf("Pods                                   %d (one Service), created with their IPs by %d writers in %s\n", n, writers, created.Round(time.Millisecond))
	fmt.Printf("all Dataplanes stored                  %s after the first Pod (%s after the last)\n", stored.Round(time.Millisecond), (stored - created).Round(time.Millisecond))
	fmt.Printf("all targets served by MADS             %s after the first Pod (%s after the last)\n", served.Round(time.Millisecond), (served - created).Round(time.Millisecond))
	if len(lat) > 0 {
		fmt.Printf("Pod change -> held long-poll answer    p50 %s  max %s  (%d rounds)\n", lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond), len(lat))
	}
	fmt.Printf("kuma-cp RSS                            idle %s, with %d Dataplanes %s, after the rounds %s, peak %s\n", idle, n, loaded, cpproc.RSS(pid), cpproc.PeakRSS(pid))
	return nil
}

// createPod creates a Pod of the Service and gives it its IP, Running.
func createPod(ctx context.Context, c client.Client, name, ip string) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}},
	}
	if err := c.Create(ctx, p); err != nil {
		return fmt.Errorf("create Pod %s: %w", name, err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if err := c.Status().Update(ctx, p); err != nil {
		return fmt.Errorf("Pod %s status: %w", name, err)
	}
	return nil
}

// waitFor polls ok every tick until it holds, fails, d passes or ctx ends.
func waitFor(ctx context.Context, d, tick time.Duration, ok func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		done, err := ok()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("not within %s", d), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(tick):
		}
	}
}
