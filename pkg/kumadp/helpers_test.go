package kumadp

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
)

func testCAPEM(t *testing.T) string {
	t.Helper()
	ca, err := pki.NewCA("test", pki.KeyType{}, time.Now(), time.Hour)
	require.NoError(t, err)
	return string(ca.CertPEM)
}

// configServer is a dataplane server over TLS that streams the configs a
// test pushes, hands back the proxy's ACK or NACK of each, and signs
// workload certificates with a mesh CA (for service "web" of mesh
// "default"). The real control plane (startControlPlane) generates configs
// from the store; these tests need configs it never generates (ports of 0,
// broken trust bundles).
type configServer struct {
	meshv1.UnimplementedDataplaneConfigServiceServer
	t       *testing.T
	addr    string
	caFile  string
	meshCA  *pki.KeyPair
	configs chan *discoveryv3.DiscoveryResponse
	answers chan *discoveryv3.DiscoveryRequest
	signed  atomic.Int32
	nonce   atomic.Int64
}

func startConfigServer(t *testing.T) *configServer {
	t.Helper()
	dir := t.TempDir()
	cert, err := dpserver.ServerCertificate(dir, "", "", time.Now())
	require.NoError(t, err)
	meshCA, err := pki.NewCA("default/ca-1", pki.KeyType{}, time.Now(), time.Hour)
	require.NoError(t, err)
	cp := &configServer{t: t, caFile: filepath.Join(dir, dpconfig.ServerCAFile), meshCA: meshCA,
		configs: make(chan *discoveryv3.DiscoveryResponse), answers: make(chan *discoveryv3.DiscoveryRequest, 1)}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	meshv1.RegisterDataplaneConfigServiceServer(srv, cp)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cp.addr = ln.Addr().String()
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	return cp
}

func (cp *configServer) StreamProxyConfig(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	if _, err := stream.Recv(); err != nil { // the proxy's hello
		return err
	}
	ctx := stream.Context()
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case cp.answers <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case resp := <-cp.configs:
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

func (cp *configServer) SignWorkloadCertificate(_ context.Context, req *meshv1.SignRequest) (*meshv1.SignResponse, error) {
	block, _ := pem.Decode(req.GetCsr())
	if block == nil {
		return nil, errors.New("csr: no PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.IssueWorkload(cp.meshCA, ca.Subject{Mesh: "default", Tags: map[string][]string{resource.ServiceTag: {"web"}}}, csr.PublicKey, time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	cp.signed.Add(1)
	return &meshv1.SignResponse{CertChain: append(append([]byte{}, leaf.CertPEM...), cp.meshCA.CertPEM...), TrustBundle: cp.meshCA.CertPEM, CaVersion: "ca-1"}, nil
}

func (cp *configServer) Deregister(context.Context, *meshv1.DeregisterRequest) (*meshv1.DeregisterResponse, error) {
	return &meshv1.DeregisterResponse{}, nil
}

// push sends cfg as version and returns the proxy's answer to it.
func (cp *configServer) push(version string, cfg *meshv1.ProxyConfig) *discoveryv3.DiscoveryRequest {
	t := cp.t
	t.Helper()
	res, err := anypb.New(cfg)
	require.NoError(t, err)
	nonce := strconv.FormatInt(cp.nonce.Add(1), 10)
	select {
	case cp.configs <- &discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: []*anypb.Any{res}, TypeUrl: dpconfig.TypeURL, Nonce: nonce}:
	case <-time.After(waitTimeout):
		t.Fatal("the proxy did not open its config stream")
	}
	select {
	case req := <-cp.answers:
		require.Equal(t, nonce, req.GetResponseNonce())
		return req
	case <-time.After(waitTimeout):
		t.Fatalf("the proxy did not answer config %s", version)
		return nil
	}
}

// runAgent runs a proxy connected to cp until the test ends, with its admin
// API on a port of its own.
func (cp *configServer) runAgent(t *testing.T) *runningAgent {
	t.Helper()
	dp, err := loadDataplane("", validDataplane)
	require.NoError(t, err)
	a := runAgentAt(t, cp.addr, cp.caFile, dp, func(*Config) {})
	require.Eventually(t, func() bool { return a.admin.addr() != "" }, waitTimeout, time.Millisecond)
	return a
}

// lineConn is a connection to a line application, through the proxy.
type lineConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialLine(addr string) (*lineConn, error) {
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		return nil, err
	}
	return &lineConn{c: c, r: bufio.NewReader(c)}, nil
}

func (l *lineConn) ask(line string) (string, error) {
	_ = l.c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(l.c, line+"\n"); err != nil {
		return "", err
	}
	s, err := l.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// ask sends one line on a new connection to addr and returns the answer.
func ask(addr, line string) (string, error) {
	l, err := dialLine(addr)
	if err != nil {
		return "", err
	}
	defer l.c.Close()
	return l.ask(line)
}

// httpStatus GETs url and returns the status and body.
func httpStatus(url string) (int, string, error) {
	c := &http.Client{Timeout: waitTimeout}
	res, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// listening returns the addresses of the TCP sockets this process listens
// on, sorted, from /proc: what the kernel has, whoever opened it.
func listening(t *testing.T) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err, "listening sockets are read from /proc (Linux)")
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if errors.Is(err, os.ErrNotExist) && table != "/proc/self/net/tcp" {
			continue // no IPv6 in this kernel
		}
		require.NoError(t, err)
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			out = append(out, procAddress(t, f[1]))
		}
	}
	slices.Sort(out)
	return out
}

// procAddress decodes /proc/net/tcp's "0100007F:1F90" (the address in
// 32-bit words of host order, the port big-endian).
func procAddress(t *testing.T, s string) string {
	t.Helper()
	h, p, ok := strings.Cut(s, ":")
	require.True(t, ok, s)
	raw, err := hex.DecodeString(h)
	require.NoError(t, err, s)
	ip := make(net.IP, len(raw))
	for i := 0; i+4 <= len(raw); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	require.NoError(t, err, s)
	return net.JoinHostPort(ip.String(), fmt.Sprint(port))
}
