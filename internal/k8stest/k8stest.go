// Package k8stest is the test harness of the Kubernetes code: one real
// kube-apiserver on Debian's etcd per test binary, started on first use
// from the folder `make k8s-bin` prints (KUBEBUILDER_ASSETS; by default the
// cache folder scripts/k8s-tools.sh fills), with kuma.io's CRDs installed,
// RBAC on, ServiceAccount tokens (TokenRequest, TokenReview) working, and
// the kubectl of the same folder. No kubelet, scheduler or controller
// manager runs: a test sets what they would (a Pod's status, its token).
//
// A package using it calls Main (or Run) from its TestMain; each test calls Get.
// When the binaries are missing a test is skipped, or fails with CI=true.
// etcd and kube-apiserver are started with Pdeathsig: they never outlive
// the test binary, also when it panics or times out.
package k8stest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/testproc"
	"github.com/kumametrics/mesh/pkg/pki"
)

// KubernetesVersion is the version of the programs the harness runs.
const KubernetesVersion = "1.37.2"

// startTimeout bounds the start of etcd and kube-apiserver on a loaded machine.
const startTimeout = 2 * time.Minute

// Env is a running API server.
type Env struct {
	// Dir holds the harness's files: certificates, kubeconfig, logs, etcd's data.
	Dir string
	// AssetsDir holds kube-apiserver, etcd and kubectl.
	AssetsDir string
	// Host is the loopback address both programs listen on (fresh for this binary).
	Host string
	// URL is the API server's address (https://<Host>:6443).
	URL string
	// KubeconfigPath is a kubeconfig of the cluster admin (group system:masters).
	KubeconfigPath string
	// KubectlPath is the kubectl of the API server's version.
	KubectlPath string
	// StartDuration is how long etcd and kube-apiserver took to serve, CRDs installed.
	StartDuration time.Duration

	config  *rest.Config
	creds   *credentials
	etcd    *testproc.Process
	apiSrv  *testproc.Process
	stopped bool
}

// Config returns a copy of the admin's rest.Config.
func (e *Env) Config() *rest.Config { return rest.CopyConfig(e.config) }

// ErrNoBinaries is returned when kube-apiserver, etcd or kubectl is missing.
var ErrNoBinaries = errors.New("Kubernetes test binaries missing")

// AssetsDir is where the binaries are looked for: $KUBEBUILDER_ASSETS, or
// the cache folder scripts/k8s-tools.sh builds into.
func AssetsDir() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	cache := os.Getenv("KUMA_TEST_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "kuma-metrics")
	}
	return filepath.Join(cache, "kubernetes-v"+KubernetesVersion)
}

// checkAssets reports which binaries the API server needs are missing.
func checkAssets(dir string) error { return checkAssetsOf(dir, "kube-apiserver", "etcd", "kubectl") }

// checkAssetsOf reports which of programs are missing in dir.
func checkAssetsOf(dir string, programs ...string) error {
	var missing []string
	for _, p := range programs {
		if st, err := os.Stat(filepath.Join(dir, p)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v not in %s (run `make k8s-bin`, or set KUBEBUILDER_ASSETS to the folder it prints)", ErrNoBinaries, missing, dir)
	}
	return nil
}

// Ports of the programs, on the binary's own loopback address.
const (
	apiServerPort = "6443"
	etcdPort      = "2379"
	etcdPeerPort  = "2380"
)

// Options change how Start runs kube-apiserver; the zero value is the
// shared API server's.
type Options struct {
	// Host is the address etcd and kube-apiserver listen on: a fresh
	// loopback address when empty (a cluster's pods need one they reach,
	// such as their bridge's host address).
	Host string
	// ServiceCIDR is the Service ClusterIP range (10.0.0.0/24 when empty).
	ServiceCIDR string
	// ServiceAccounts turns the ServiceAccount admission plugin on: Pods
	// get the token volume a kubelet mounts, and are refused while their
	// ServiceAccount does not exist (a controller manager makes them).
	ServiceAccounts bool
}

// Start starts etcd and kube-apiserver and installs the CRDs. Most tests
// use Get instead, which shares one Env per test binary.
func Start(ctx context.Context) (*Env, error) { return StartWith(ctx, Options{}) }

// StartWith is Start with opts.
func StartWith(ctx context.Context, opts Options) (env *Env, err error) {
	began := time.Now()
	// controller-runtime complains on stderr, with a stack, when nothing
	// set its process-wide logger within 30 s; a test that wants its logs
	// sets one before its first Get (the first call wins).
	ctrllog.SetLogger(logr.Discard())
	assets := AssetsDir()
	if err := checkAssets(assets); err != nil {
		return nil, err
	}
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm" // etcd fsyncs: memory is faster than disk
	}
	sweep(base)
	dir, err := os.MkdirTemp(base, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("k8stest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("k8stest: %w", err)
	}
	host := opts.Host
	if host == "" {
		host = loopback.Host()
	}
	serviceCIDR := opts.ServiceCIDR
	if serviceCIDR == "" {
		serviceCIDR = "10.0.0.0/24"
	}
	env = &Env{
		Dir: dir, AssetsDir: assets, Host: host, URL: "https://" + net.JoinHostPort(host, apiServerPort),
		KubeconfigPath: filepath.Join(dir, "kubeconfig"), KubectlPath: filepath.Join(assets, "kubectl"),
	}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	env.creds, err = writeCredentials(dir, host)
	creds := env.creds
	if err != nil {
		return nil, err
	}
	etcdURL := "http://" + net.JoinHostPort(host, etcdPort)
	peerURL := "http://" + net.JoinHostPort(host, etcdPeerPort)
	env.etcd, err = start("etcd", filepath.Join(dir, "etcd.log"), filepath.Join(assets, "etcd"),
		"--name=k8stest", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=k8stest="+peerURL, "--initial-cluster-state=new",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, env.etcd, http.DefaultClient, etcdURL+"/health"); err != nil {
		return nil, err
	}
	args := []string{
		"--bind-address=" + host, "--advertise-address=" + host, "--secure-port=" + apiServerPort,
		// Nothing reaches the API server through the `kubernetes` Service,
		// whose endpoints may not be a loopback address.
		"--endpoint-reconciler-type=none",
		"--etcd-servers=" + etcdURL,
		"--tls-cert-file=" + creds.servingCert, "--tls-private-key-file=" + creds.servingKey,
		"--client-ca-file=" + creds.clientCA,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + creds.saPublic, "--service-account-signing-key-file=" + creds.saPrivate,
		"--allow-privileged=true",
		"--v=1",
	}
	if !opts.ServiceAccounts {
		// The ServiceAccount admission plugin refuses Pods whose
		// ServiceAccount the (absent) controller manager has not made;
		// tests request tokens themselves (TokenRequest).
		args = append(args, "--disable-admission-plugins=ServiceAccount")
	}
	env.apiSrv, err = start("kube-apiserver", filepath.Join(dir, "kube-apiserver.log"), filepath.Join(assets, "kube-apiserver"), args...)
	if err != nil {
		return nil, err
	}
	env.config = &rest.Config{
		Host: env.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: creds.caPEM, CertData: creds.adminCertPEM, KeyData: creds.adminKeyPEM,
		},
		QPS: 1000, Burst: 2000, // a test's bursts are not throttled on the client side
	}
	if err := writeKubeconfig(env.KubeconfigPath, env.URL, creds); err != nil {
		return nil, err
	}
	httpClient, err := rest.HTTPClientFor(env.config)
	if err != nil {
		return nil, fmt.Errorf("k8stest: admin client: %w", err)
	}
	if err := waitHTTP(ctx, env.apiSrv, httpClient, env.URL+"/readyz"); err != nil {
		return nil, err
	}
	if err := installCRDs(ctx, env.config); err != nil {
		return nil, err
	}
	env.StartDuration = time.Since(began)
	return env, nil
}

// A harness folder holds the id of the process that made it, so that the
// next start removes the folders of test binaries that died without
// stopping (etcd's files take ~120 MB, in memory under /dev/shm).
const (
	dirPrefix = "k8stest-"
	ownerFile = "owner.pid"
)

// sweep removes the harness folders in base whose owner is gone.
func sweep(base string) {
	if base == "" {
		base = os.TempDir()
	}
	dirs, _ := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
	for _, dir := range dirs {
		if testproc.OwnerGone(filepath.Join(dir, ownerFile)) {
			_ = os.RemoveAll(dir)
		}
	}
}

// Stop stops kube-apiserver and etcd and removes Dir.
func (e *Env) Stop() {
	if e == nil || e.stopped {
		return
	}
	e.stopped = true
	if e.apiSrv != nil {
		e.apiSrv.Stop(15 * time.Second)
	}
	if e.etcd != nil {
		e.etcd.Stop(10 * time.Second)
	}
	_ = os.RemoveAll(e.Dir)
}

// waitHTTP polls url until it answers 200, the process exits or ctx ends.
func waitHTTP(ctx context.Context, p *testproc.Process, c *http.Client, url string) error {
	var last error
	for {
		if err := p.ExitError(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (%v): %v; its last output (%s):\n%s", p.Name, ctx.Err(), last, p.LogPath, p.LogTail())
		case <-p.Exited():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type credentials struct {
	caPEM, adminCertPEM, adminKeyPEM []byte
	servingCert, servingKey          string
	clientCA                         string
	saPublic, saPrivate              string
}

// writeCredentials creates one CA for the serving certificate and the
// admin's client certificate, and the ServiceAccount signing key.
func writeCredentials(dir, host string) (*credentials, error) {
	now := time.Now()
	ca, err := pki.NewCA("k8stest-ca", pki.KeyType{}, now, 7*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("k8stest: %w", err)
	}
	serving, err := pki.Issue(ca, pki.Leaf{
		CommonName: "kube-apiserver", DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPs: []net.IP{net.ParseIP(host), net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}, Server: true, Lifetime: 7 * 24 * time.Hour,
	}, now)
	if err != nil {
		return nil, fmt.Errorf("k8stest: %w", err)
	}
	admin, err := pki.Issue(ca, pki.Leaf{CommonName: "k8stest-admin", Organizations: []string{"system:masters"}, Client: true, Lifetime: 7 * 24 * time.Hour}, now)
	if err != nil {
		return nil, fmt.Errorf("k8stest: %w", err)
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("k8stest: %w", err)
	}
	saKeyPEM, err := pki.EncodeKey(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("k8stest: %w", err)
	}
	c := &credentials{
		caPEM: ca.CertPEM, adminCertPEM: admin.CertPEM, adminKeyPEM: admin.KeyPEM,
		servingCert: filepath.Join(dir, "apiserver.pem"), servingKey: filepath.Join(dir, "apiserver.key"),
		clientCA: filepath.Join(dir, "ca.pem"), saPublic: filepath.Join(dir, "sa.pub"), saPrivate: filepath.Join(dir, "sa.key"),
	}
	for path, data := range map[string][]byte{
		c.servingCert: serving.CertPEM, c.servingKey: serving.KeyPEM, c.clientCA: ca.CertPEM,
		c.saPrivate: saKeyPEM, c.saPublic: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("k8stest: %w", err)
		}
	}
	return c, nil
}

func writeKubeconfig(path, url string, c *credentials) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["k8stest"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.adminCertPEM, ClientKeyData: c.adminKeyPEM}
	cfg.Contexts["k8stest"] = &clientcmdapi.Context{Cluster: "k8stest", AuthInfo: "admin"}
	cfg.CurrentContext = "k8stest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("k8stest: write kubeconfig: %w", err)
	}
	return nil
}

// The Env shared by the tests of one binary.
var (
	sharedMu  sync.Mutex
	shared    *Env
	sharedErr error
)

// Main runs the tests of a binary (call it from TestMain) and exits with
// their status; see Run.
func Main(m *testing.M, checks ...func() error) {
	os.Exit(Run(m, checks...))
}

// Run runs the tests of a binary and stops the API server afterwards if a
// test started one; then it runs checks (e.g. a goroutine leak check), each
// failing the binary with its error. It returns the exit status, for a
// TestMain that has more to clean up (Main exits at once).
func Run(m *testing.M, checks ...func() error) int {
	code := m.Run()
	sharedMu.Lock()
	shared.Stop()
	sharedMu.Unlock()
	testproc.StopSpawner()
	if code == 0 {
		for _, check := range checks {
			if err := check(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				code = 1
			}
		}
	}
	return code
}

// Get returns the binary's API server, starting it on first use (see Main).
// When the binaries are missing it skips t, or fails it when CI=true; when
// they are there but do not start, it fails t.
func Get(t testing.TB) *Env {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = Start(context.Background())
		if sharedErr == nil {
			t.Logf("k8stest: kube-apiserver v%s and etcd serving at %s after %s (CRDs installed)", KubernetesVersion, shared.URL, shared.StartDuration.Round(time.Millisecond))
		}
	}
	switch {
	case sharedErr == nil:
		return shared
	case errors.Is(sharedErr, ErrNoBinaries):
		testproc.SkipOrFail(t, "k8stest: %v", sharedErr)
	default:
		t.Fatalf("k8stest: %v", sharedErr)
	}
	return nil
}

// EtcdPID is etcd's process id.
func (e *Env) EtcdPID() int { return e.etcd.Pid() }

// APIServerPID is kube-apiserver's process id.
func (e *Env) APIServerPID() int { return e.apiSrv.Pid() }
