package k8stest

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kumametrics/mesh/internal/testproc"
)

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	Options
	// NodeName is the one Node's name ("k8stest-node" when empty).
	NodeName string
}

// Cluster is an API server with the controller manager and the scheduler
// of the same version, and one Node object kept Ready (its Lease renewed
// and its Ready condition refreshed): Deployments make ReplicaSets and
// Pods, ServiceAccounts and their root CA ConfigMap appear in every
// namespace, Services get EndpointSlices, Pods are bound to the Node. No
// kubelet runs: whoever plays it watches the Pods bound to NodeName.
type Cluster struct {
	*Env
	NodeName string

	controllers, scheduler *testproc.Process
	stopRenew              context.CancelFunc
	renewDone              sync.WaitGroup
}

// nodeRenewInterval is how often the Node's Lease and Ready condition are
// renewed (the node lifecycle controller's grace period is 40 s).
const nodeRenewInterval = 5 * time.Second

// StartCluster starts etcd, kube-apiserver (with opts.Options; ServiceAccounts
// is forced on), kube-controller-manager and kube-scheduler, and registers
// the Node. Stop stops them all.
func StartCluster(ctx context.Context, opts ClusterOptions) (c *Cluster, err error) {
	if opts.NodeName == "" {
		opts.NodeName = "k8stest-node"
	}
	if err := checkAssetsOf(AssetsDir(), "kube-controller-manager", "kube-scheduler"); err != nil {
		return nil, err
	}
	opts.ServiceAccounts = true
	env, err := StartWith(ctx, opts.Options)
	if err != nil {
		return nil, err
	}
	c = &Cluster{Env: env, NodeName: opts.NodeName}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	serviceCIDR := opts.ServiceCIDR
	if serviceCIDR == "" {
		serviceCIDR = "10.0.0.0/24"
	}
	c.controllers, err = start("kube-controller-manager", filepath.Join(env.Dir, "kube-controller-manager.log"),
		filepath.Join(env.AssetsDir, "kube-controller-manager"),
		"--kubeconfig="+env.KubeconfigPath, "--secure-port=0", "--leader-elect=false",
		// Tokens are requested per Pod (TokenRequest), never kept in Secrets.
		"--controllers=*,-serviceaccount-token",
		"--root-ca-file="+env.creds.clientCA,
		"--service-cluster-ip-range="+serviceCIDR,
		"--use-service-account-credentials=false",
		"--v=1")
	if err != nil {
		return nil, err
	}
	c.scheduler, err = start("kube-scheduler", filepath.Join(env.Dir, "kube-scheduler.log"),
		filepath.Join(env.AssetsDir, "kube-scheduler"),
		"--kubeconfig="+env.KubeconfigPath, "--secure-port=0", "--leader-elect=false", "--v=1")
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(env.Config())
	if err != nil {
		return nil, fmt.Errorf("k8stest: clientset: %w", err)
	}
	if err := c.registerNode(ctx, cs); err != nil {
		return nil, err
	}
	renewCtx, cancel := context.WithCancel(context.Background())
	c.stopRenew = cancel
	c.renewDone.Add(1)
	go func() {
		defer c.renewDone.Done()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-time.After(nodeRenewInterval):
			}
			// An error is retried at the next round: the grace period
			// leaves room for several.
			_ = c.renewNode(renewCtx, cs)
		}
	}()
	return c, nil
}

// registerNode creates the Node (room for every Pod the tests make) and
// its Lease, Ready.
func (c *Cluster) registerNode(ctx context.Context, cs kubernetes.Interface) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: c.NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": c.NodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		}},
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("k8stest: create node %s: %w", c.NodeName, err)
	}
	created.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: c.Host}, {Type: corev1.NodeHostName, Address: c.NodeName}},
		NodeInfo:  corev1.NodeSystemInfo{KubeletVersion: "v" + KubernetesVersion, OperatingSystem: "linux", Architecture: "amd64"},
	}
	created.Status.Conditions = readyConditions(metav1.Now())
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("k8stest: node %s status: %w", c.NodeName, err)
	}
	return c.renewNode(ctx, cs)
}

func readyConditions(now metav1.Time) []corev1.NodeCondition {
	return []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "the test node agent plays the kubelet", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
	}
}

// renewNode renews the Node's Lease (creating it) and its conditions'
// heartbeat, as a kubelet does.
func (c *Cluster) renewNode(ctx context.Context, cs kubernetes.Interface) error {
	now := metav1.NowMicro()
	leases := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	lease, err := leases.Get(ctx, c.NodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: c.NodeName},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(c.NodeName), LeaseDurationSeconds: ptr.To(int32(40)), RenewTime: &now},
		}, metav1.CreateOptions{})
	case err == nil:
		lease.Spec.RenewTime = &now
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("k8stest: node lease: %w", err)
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("k8stest: node %s: %w", c.NodeName, err)
	}
	for i := range node.Status.Conditions {
		node.Status.Conditions[i].LastHeartbeatTime = metav1.Now()
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("k8stest: node %s status: %w", c.NodeName, err)
	}
	return nil
}

// Stop stops renewing the Node, the scheduler, the controller manager, then
// the API server and etcd (Env.Stop).
func (c *Cluster) Stop() {
	if c.stopRenew != nil {
		c.stopRenew()
		c.renewDone.Wait()
	}
	if c.scheduler != nil {
		c.scheduler.Stop(10 * time.Second)
	}
	if c.controllers != nil {
		c.controllers.Stop(10 * time.Second)
	}
	c.Env.Stop()
}

// CheckClusterAssets tells which programs a Cluster needs are missing
// (nil: none).
func CheckClusterAssets() error {
	return checkAssetsOf(AssetsDir(), "kube-apiserver", "etcd", "kubectl", "kube-controller-manager", "kube-scheduler")
}

// ControllerManagerPID is kube-controller-manager's process id.
func (c *Cluster) ControllerManagerPID() int { return c.controllers.Pid() }

// SchedulerPID is kube-scheduler's process id.
func (c *Cluster) SchedulerPID() int { return c.scheduler.Pid() }
