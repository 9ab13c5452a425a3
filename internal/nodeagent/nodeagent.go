// Package nodeagent is the test node agent: it plays the kubelet for the
// Pods a k8stest.Cluster's scheduler binds to its Node, on this machine,
// without containers. Each Pod gets a network namespace of a
// netnstest.Network (a veth on the test bridge, an address of its pod
// range); its init containers run to completion inside it, then each
// container runs as a local process inside it, mapped from its image to a
// program built here (Images), as the container's user and group, with the
// Pod's environment (env, downward API fields, $(VAR) references) and its
// volumes (ConfigMaps, Secrets, projected ServiceAccount tokens bound to the
// Pod, downward API files, emptyDirs, PersistentVolumeClaims) as files
// under a per-Pod root: every argument and environment value naming a
// mount path is rewritten to the file's place there (the ServiceAccount
// volume, read at a fixed path by in-cluster clients, is bound at that path
// in a mount namespace of the container's own, over an empty /run). The Pod's status gets
// its IP, Running and Ready once every container runs (probes are not run),
// and a container that exits is reported terminated, not restarted. A Pod
// with an image the agent cannot run is left Pending, its containers
// waiting with reason ImageNotRunnableHere. A deleted Pod's processes are
// stopped, its namespace removed, and the Pod deleted for good (as a
// kubelet confirms a graceful deletion).
//
// It supports what the tests' manifests use, no more: no probes, no
// restarts, no resource limits, no ports mapping (the Pod's network is the
// namespace), no image pulling, no Pod updates after the start, no DNS
// (docs/2026-12-06-test-cluster.md lists the rest).
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kumametrics/mesh/internal/netnstest"
	"github.com/kumametrics/mesh/internal/testproc"
)

// Image says how a container of an image runs here.
type Image struct {
	// Path is the program the image's entrypoint stands for.
	Path string
	// Args, when set, replace a container's args that give none (the
	// image's default command), with $(PORT) the container's first port.
	Args []string
	// Commands maps a container's command[0] to a program (kumactl in the
	// kuma-dp image).
	Commands map[string]string
}

// Config configures an Agent.
type Config struct {
	Client   kubernetes.Interface
	NodeName string
	Network  *netnstest.Network
	// Images by repository (the image without its tag).
	Images map[string]Image
	// Dir holds the Pods' roots and the containers' logs.
	Dir string
	// APIServerHost and APIServerPort, when set, are every container's
	// KUBERNETES_SERVICE_HOST and _PORT: the API server's own address
	// (no kube-proxy makes the kubernetes Service's ClusterIP reach it).
	APIServerHost, APIServerPort string
	Log                          *slog.Logger
}

// Agent runs the Pods bound to its Node.
type Agent struct {
	cfg    Config
	cancel context.CancelFunc
	done   chan struct{}
	// retry receives the Pods to start again (a volume was not ready).
	retry chan podKey

	mu   sync.Mutex
	pods map[types.UID]*podRun
}

// podKey names a Pod to start again.
type podKey struct {
	Namespace, Name string
	UID             types.UID
}

// volumeRetry is how long a Pod whose volume's object is missing waits.
const volumeRetry = 500 * time.Millisecond

// volumeNotReady is a volume whose ConfigMap or Secret does not exist yet.
type volumeNotReady struct{ err error }

func (e *volumeNotReady) Error() string { return e.err.Error() }
func (e *volumeNotReady) Unwrap() error { return e.err }

// podRun is a Pod the agent started.
type podRun struct {
	pod   *corev1.Pod
	netns *netnstest.Pod
	root  string
	procs []*testproc.Process
}

// Start watches the Pods bound to cfg.NodeName until Stop.
func Start(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{cfg: cfg, cancel: cancel, done: make(chan struct{}), retry: make(chan podKey), pods: map[types.UID]*podRun{}}
	go a.loop(ctx)
	return a, nil
}

// Stop stops watching, then every Pod's processes and namespace.
func (a *Agent) Stop() {
	a.cancel()
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, r := range a.pods {
		r.stop()
		delete(a.pods, uid)
	}
}

// loop watches the Node's Pods (re-listing after a watch ends) and handles
// each event in order.
func (a *Agent) loop(ctx context.Context) {
	defer close(a.done)
	sel := fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
	pods := a.cfg.Client.CoreV1().Pods(metav1.NamespaceAll)
	for ctx.Err() == nil {
		list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			a.pause(ctx, "list pods", err)
			continue
		}
		seen := map[types.UID]bool{}
		for i := range list.Items {
			seen[list.Items[i].UID] = true
			a.handle(ctx, &list.Items[i])
		}
		a.forgetGone(seen)
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			a.pause(ctx, "watch pods", err)
			continue
		}
	events:
		for {
			select {
			case <-ctx.Done():
				break events
			case key := <-a.retry:
				// The Pod as it is now (gone or replaced: nothing to do).
				pod, err := a.cfg.Client.CoreV1().Pods(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
				if err == nil && pod.UID == key.UID {
					a.handle(ctx, pod)
				}
			case ev, ok := <-w.ResultChan():
				if !ok {
					break events
				}
				pod, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				if ev.Type == watch.Deleted {
					a.forget(pod.UID)
					continue
				}
				a.handle(ctx, pod)
			}
		}
		w.Stop()
	}
}

func (a *Agent) pause(ctx context.Context, what string, err error) {
	if ctx.Err() == nil {
		a.cfg.Log.Warn("nodeagent: "+what, "error", err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}

// forgetGone stops the Pods that no longer exist.
func (a *Agent) forgetGone(seen map[types.UID]bool) {
	a.mu.Lock()
	var gone []types.UID
	for uid := range a.pods {
		if !seen[uid] {
			gone = append(gone, uid)
		}
	}
	a.mu.Unlock()
	for _, uid := range gone {
		a.forget(uid)
	}
}

func (a *Agent) forget(uid types.UID) {
	a.mu.Lock()
	r := a.pods[uid]
	delete(a.pods, uid)
	a.mu.Unlock()
	if r != nil {
		r.stop()
	}
}

// handle starts a new Pod, or ends a deleted one.
func (a *Agent) handle(ctx context.Context, pod *corev1.Pod) {
	a.mu.Lock()
	r, known := a.pods[pod.UID]
	a.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		if known {
			a.forget(pod.UID)
		}
		// The kubelet's confirmation: the containers are gone.
		err := a.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			a.cfg.Log.Warn("nodeagent: delete pod", "pod", pod.Namespace+"/"+pod.Name, "error", err)
		}
		return
	}
	if known || r != nil || pod.Status.Phase != corev1.PodPending && pod.Status.Phase != "" {
		return
	}
	if missing := a.notRunnable(pod); len(missing) > 0 {
		for _, st := range pod.Status.ContainerStatuses {
			if st.State.Waiting != nil && st.State.Waiting.Reason == NotRunnableReason {
				return // reported already
			}
		}
		a.reportNotRunnable(ctx, pod, missing)
		return
	}
	r, err := a.run(ctx, pod)
	var notYet *volumeNotReady
	switch {
	case errors.As(err, &notYet):
		// As a kubelet, wait for what the volume needs (the root CA
		// ConfigMap appears shortly after its namespace).
		a.cfg.Log.Info("nodeagent: volume not ready, retrying", "pod", pod.Namespace+"/"+pod.Name, "error", err)
		key := podKey{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
		time.AfterFunc(volumeRetry, func() {
			select {
			case a.retry <- key:
			case <-ctx.Done():
			}
		})
		return
	case err != nil:
		a.cfg.Log.Error("nodeagent: run pod", "pod", pod.Namespace+"/"+pod.Name, "error", err)
		a.reportFailed(ctx, pod, err)
		return
	}
	a.mu.Lock()
	a.pods[pod.UID] = r
	a.mu.Unlock()
}

// repository is an image without its tag or digest.
func repository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// program is what runs for a container: its path and arguments.
func (a *Agent) program(c *corev1.Container) (string, []string, bool) {
	img, ok := a.cfg.Images[repository(c.Image)]
	if !ok {
		return "", nil, false
	}
	args := c.Args
	if len(c.Command) > 0 {
		path, ok := img.Commands[c.Command[0]]
		if !ok {
			return "", nil, false
		}
		return path, append(append([]string{}, c.Command[1:]...), args...), true
	}
	if len(args) == 0 {
		port := ""
		if len(c.Ports) > 0 {
			port = strconv.Itoa(int(c.Ports[0].ContainerPort))
		}
		for _, arg := range img.Args {
			args = append(args, strings.ReplaceAll(arg, "$(PORT)", port))
		}
	}
	return img.Path, args, true
}

// notRunnable lists the images of pod that have no program here.
func (a *Agent) notRunnable(pod *corev1.Pod) []string {
	var missing []string
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if _, _, ok := a.program(&c); !ok {
			missing = append(missing, c.Image)
		}
	}
	return missing
}

// NotRunnableReason is the waiting reason of a container whose image the
// agent cannot run.
const NotRunnableReason = "ImageNotRunnableHere"

func (a *Agent) reportNotRunnable(ctx context.Context, pod *corev1.Pod, images []string) {
	p := pod.DeepCopy()
	for _, c := range p.Spec.Containers {
		setStatus(p, corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: NotRunnableReason, Message: "the test node agent has no program for image(s) " + strings.Join(images, ", ")},
		}})
	}
	p.Status.Phase = corev1.PodPending
	a.updateStatus(ctx, p)
	a.cfg.Log.Info("nodeagent: pod not runnable here", "pod", pod.Namespace+"/"+pod.Name, "images", images)
}

func (a *Agent) reportFailed(ctx context.Context, pod *corev1.Pod, err error) {
	p := pod.DeepCopy()
	p.Status.Phase = corev1.PodFailed
	p.Status.Reason = "NodeAgentFailed"
	p.Status.Message = err.Error()
	a.updateStatus(ctx, p)
}

func setStatus(p *corev1.Pod, s corev1.ContainerStatus) {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == s.Name {
			p.Status.ContainerStatuses[i] = s
			return
		}
	}
	p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, s)
}

func (a *Agent) updateStatus(ctx context.Context, p *corev1.Pod) {
	if _, err := a.cfg.Client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
		a.cfg.Log.Warn("nodeagent: pod status", "pod", p.Namespace+"/"+p.Name, "error", err)
	}
}

// run starts pod: namespace, volumes, init containers, containers, status.
func (a *Agent) run(ctx context.Context, pod *corev1.Pod) (r *podRun, err error) {
	if err := a.volumesReady(ctx, pod); err != nil {
		return nil, err
	}
	name := pod.Namespace + "-" + pod.Name
	netns, err := a.cfg.Network.NewPod(name)
	if err != nil {
		return nil, err
	}
	r = &podRun{pod: pod, netns: netns, root: filepath.Join(a.cfg.Dir, name)}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	ip := netns.IP.String()
	if err := os.MkdirAll(r.root, 0o755); err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	volumes, err := a.writeVolumes(ctx, pod, ip, r.root)
	if err != nil {
		return nil, err // stop removes the namespace; a retry makes another
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		proc, err := a.start(pod, c, ip, r, volumes)
		if err != nil {
			return nil, err
		}
		select {
		case <-proc.Exited():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := proc.Cmd.ProcessState; err == nil || !err.Success() {
			return nil, fmt.Errorf("init container %s failed: %s", c.Name, proc.LogTail())
		}
	}
	for i := range pod.Spec.Containers {
		if _, err := a.start(pod, &pod.Spec.Containers[i], ip, r, volumes); err != nil {
			return nil, err
		}
	}
	a.setRunning(ctx, pod, ip)
	for i, proc := range r.procs[len(pod.Spec.InitContainers):] {
		go a.watchExit(ctx, pod, &pod.Spec.Containers[i], proc)
	}
	return r, nil
}

// start runs one container of pod as a process in its namespace.
func (a *Agent) start(pod *corev1.Pod, c *corev1.Container, ip string, r *podRun, volumes map[string]string) (*testproc.Process, error) {
	path, args, _ := a.program(c)
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir, ok := volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("container %s mounts unknown volume %s", c.Name, m.Name)
		}
		mounts[m.MountPath] = filepath.Join(dir, m.SubPath)
	}
	env, err := containerEnv(pod, c, ip)
	if err != nil {
		return nil, err
	}
	for i := range args {
		args[i] = rewrite(expand(args[i], env), mounts)
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+rewrite(v, mounts))
	}
	sort.Strings(envList)
	envList = append(envList, "PATH="+os.Getenv("PATH"), "HOME="+r.root)
	if a.cfg.APIServerHost != "" {
		envList = append(envList, "KUBERNETES_SERVICE_HOST="+a.cfg.APIServerHost, "KUBERNETES_SERVICE_PORT="+a.cfg.APIServerPort)
	}
	uid, gid := user(pod, c)
	cmd := r.netns.Command(netnstest.Proc{UID: uid, GID: gid, Env: envList, Dir: r.root}, path, args...)
	if src, ok := mounts[serviceAccountDir]; ok {
		// Clients read the in-cluster credentials from this fixed path
		// (no flag names it): a mount namespace of the container's own
		// shows the volume there, over an empty /run (which /var/run is).
		script := `mount -t tmpfs kmt-run /run && mkdir -p "$1" && mount --bind "$2" "$1" && ` +
			`u=$3 g=$4 && shift 4 && exec setpriv --reuid "$u" --regid "$g" --clear-groups --pdeathsig KILL -- "$@"`
		cmd = r.netns.Command(netnstest.Proc{Env: envList, Dir: r.root}, "unshare", append([]string{
			"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
			serviceAccountDir, src, strconv.Itoa(uid), strconv.Itoa(gid), path}, args...)...)
	}
	proc, err := testproc.Start(pod.Name+"/"+c.Name, filepath.Join(r.root, c.Name+".log"), cmd)
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, proc)
	a.cfg.Log.Info("nodeagent: container started", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "program", path, "args", args, "uid", uid)
	return proc, nil
}

// serviceAccountDir is where clients look for the in-cluster credentials.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// user is the UID and GID a container runs as (root unless its or the
// Pod's securityContext says otherwise).
func user(pod *corev1.Pod, c *corev1.Container) (int, int) {
	uid, gid := 0, 0
	if sc := pod.Spec.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = int(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = int(*sc.RunAsGroup)
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = int(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = int(*sc.RunAsGroup)
		}
	}
	return uid, gid
}

// rewrite replaces a mount path at the start of s (or after '=') by the
// file's place under the Pod's root; the longest mount path wins.
func rewrite(s string, mounts map[string]string) string {
	best := ""
	for mp := range mounts {
		if len(mp) > len(best) && (strings.HasPrefix(s, mp) || strings.Contains(s, "="+mp)) {
			best = mp
		}
	}
	if best == "" {
		return s
	}
	if strings.HasPrefix(s, best) {
		return mounts[best] + s[len(best):]
	}
	return strings.Replace(s, "="+best, "="+mounts[best], 1)
}

// expand replaces $(VAR) by the container's variables, as the kubelet does.
func expand(s string, env map[string]string) string {
	for k, v := range env {
		s = strings.ReplaceAll(s, "$("+k+")", v)
	}
	return s
}

// containerEnv is the container's environment: its env, in order, with
// $(VAR) of earlier ones expanded and downward API fields resolved.
func containerEnv(pod *corev1.Pod, c *corev1.Container, ip string) (map[string]string, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			v, err := fieldValue(pod, e.ValueFrom.FieldRef.FieldPath, ip)
			if err != nil {
				return nil, fmt.Errorf("container %s env %s: %w", c.Name, e.Name, err)
			}
			env[e.Name] = v
		default:
			return nil, fmt.Errorf("container %s env %s: only values and fieldRef are supported here", c.Name, e.Name)
		}
	}
	return env, nil
}

// fieldValue resolves a downward API field path.
func fieldValue(pod *corev1.Pod, path, ip string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return ip, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.annotations": pod.Annotations, "metadata.labels": pod.Labels} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok {
			key, ok = strings.CutSuffix(key, "']")
			if !ok {
				break
			}
			return m[key], nil
		}
	}
	return "", fmt.Errorf("field %q is not supported here", path)
}

// writeVolumes writes the Pod's volumes under root and returns each one's
// directory.
func (a *Agent) writeVolumes(ctx context.Context, pod *corev1.Pod, ip, root string) (map[string]string, error) {
	dirs := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(root, "volumes", v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("nodeagent: %w", err)
		}
		files := map[string][]byte{}
		var err error
		switch {
		case v.ConfigMap != nil:
			err = a.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, ptr.Deref(v.ConfigMap.Optional, false), files)
		case v.Secret != nil:
			err = a.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, ptr.Deref(v.Secret.Optional, false), files)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				switch {
				case src.ServiceAccountToken != nil:
					var token string
					token, err = a.token(ctx, pod, src.ServiceAccountToken)
					files[src.ServiceAccountToken.Path] = []byte(token)
				case src.ConfigMap != nil:
					err = a.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, ptr.Deref(src.ConfigMap.Optional, false), files)
				case src.Secret != nil:
					err = a.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, ptr.Deref(src.Secret.Optional, false), files)
				case src.DownwardAPI != nil:
					err = downwardFiles(pod, src.DownwardAPI.Items, ip, files)
				default:
					err = fmt.Errorf("a projected source other than token, ConfigMap, Secret or downward API")
				}
				if err != nil {
					break
				}
			}
		case v.DownwardAPI != nil:
			err = downwardFiles(pod, v.DownwardAPI.Items, ip, files)
		case v.EmptyDir != nil, v.PersistentVolumeClaim != nil:
			// A directory any container's user may write (Prometheus'
			// storage runs as nobody).
			err = os.Chmod(dir, 0o777)
		default:
			err = fmt.Errorf("this kind of volume is not supported here")
		}
		if apierrors.IsNotFound(err) {
			return nil, &volumeNotReady{fmt.Errorf("volume %s of pod %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)}
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s of pod %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
		}
		for name, data := range files {
			path := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, fmt.Errorf("nodeagent: %w", err)
			}
			// Readable by every container's user: the containers of one
			// Pod share their volumes here as they would there.
			if err := os.WriteFile(path, data, 0o644); err != nil {
				return nil, fmt.Errorf("nodeagent: %w", err)
			}
		}
		dirs[v.Name] = dir
	}
	return dirs, nil
}

// volumesReady checks that the ConfigMaps and Secrets the Pod's volumes
// need exist (volumeNotReady when one does not yet), before the Pod gets a
// network namespace.
func (a *Agent) volumesReady(ctx context.Context, pod *corev1.Pod) error {
	check := func(kind, name string, optional *bool) error {
		var err error
		switch kind {
		case "ConfigMap":
			_, err = a.cfg.Client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		default:
			_, err = a.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		}
		switch {
		case apierrors.IsNotFound(err) && !ptr.Deref(optional, false):
			return &volumeNotReady{fmt.Errorf("%s %s of pod %s/%s: %w", kind, name, pod.Namespace, pod.Name, err)}
		case apierrors.IsNotFound(err):
			return nil
		}
		return err
	}
	for _, v := range pod.Spec.Volumes {
		var err error
		switch {
		case v.ConfigMap != nil:
			err = check("ConfigMap", v.ConfigMap.Name, v.ConfigMap.Optional)
		case v.Secret != nil:
			err = check("Secret", v.Secret.SecretName, v.Secret.Optional)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				switch {
				case src.ConfigMap != nil:
					err = check("ConfigMap", src.ConfigMap.Name, src.ConfigMap.Optional)
				case src.Secret != nil:
					err = check("Secret", src.Secret.Name, src.Secret.Optional)
				}
				if err != nil {
					break
				}
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func selectItems(data map[string][]byte, items []corev1.KeyToPath, files map[string][]byte) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = v
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("no key %q", it.Key)
		}
		files[it.Path] = v
	}
	return nil
}

func (a *Agent) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional bool, files map[string][]byte) error {
	cm, err := a.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ConfigMap %s: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return selectItems(data, items, files)
}

func (a *Agent) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional bool, files map[string][]byte) error {
	s, err := a.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("Secret %s: %w", name, err)
	}
	return selectItems(s.Data, items, files)
}

// token requests a token of the Pod's ServiceAccount bound to the Pod (not
// renewed: the tests end before it expires).
func (a *Agent) token(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	res, err := a.cfg.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of ServiceAccount %s: %w", sa, err)
	}
	return res.Status.Token, nil
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, ip string, files map[string][]byte) error {
	for _, it := range items {
		if it.FieldRef == nil {
			return errors.New("only fieldRef downward API files are supported here")
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath, ip)
		if err != nil {
			return err
		}
		files[it.Path] = []byte(v)
	}
	return nil
}

// setRunning reports the Pod running and ready with its IP.
func (a *Agent) setRunning(ctx context.Context, pod *corev1.Pod, ip string) {
	p := pod.DeepCopy()
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	p.Status.HostIP, p.Status.HostIPs = a.cfg.Network.Gateway.String(), []corev1.HostIP{{IP: a.cfg.Network.Gateway.String()}}
	p.Status.StartTime = &now
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		setStatus(p, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	a.updateStatus(ctx, p)
}

// watchExit reports a container that ended as terminated (no restarts).
func (a *Agent) watchExit(ctx context.Context, pod *corev1.Pod, c *corev1.Container, proc *testproc.Process) {
	select {
	case <-ctx.Done():
		return
	case <-proc.Exited():
	}
	a.mu.Lock()
	_, still := a.pods[pod.UID]
	a.mu.Unlock()
	if !still {
		return // stopped by the agent
	}
	a.cfg.Log.Warn("nodeagent: container exited", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "output", proc.LogTail())
	cur, err := a.cfg.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return
	}
	code := int32(-1)
	if st := proc.Cmd.ProcessState; st != nil {
		code = int32(st.ExitCode())
	}
	setStatus(cur, corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{
		Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error", FinishedAt: metav1.Now()},
	}})
	for i := range cur.Status.Conditions {
		if t := cur.Status.Conditions[i].Type; t == corev1.PodReady || t == corev1.ContainersReady {
			cur.Status.Conditions[i].Status = corev1.ConditionFalse
		}
	}
	a.updateStatus(ctx, cur)
}

// stop ends the Pod's processes and removes its namespace.
func (r *podRun) stop() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		r.procs[i].Stop(10 * time.Second)
	}
	r.netns.Remove()
}

// Logs returns the output of every container of the Pod named ns/name that
// the agent runs, for a failing test.
func (a *Agent) Logs(ns, name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var b strings.Builder
	for _, r := range a.pods {
		if r.pod.Namespace == ns && r.pod.Name == name {
			for _, p := range r.procs {
				fmt.Fprintf(&b, "--- %s\n%s\n", p.Name, p.LogTail())
			}
		}
	}
	return b.String()
}
