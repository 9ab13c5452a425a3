package dpserver

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/resource"
)

// SignWorkloadCertificate certifies a proxy's key with its mesh's enabled
// CA. The identities come from the stored Dataplane, never from the request,
// and only when the Authenticator admits the proxy to it (Certify: with
// dataplane tokens, when the token allows every inbound tag of it).
func (svc *service) SignWorkloadCertificate(ctx context.Context, req *meshv1.SignRequest) (*meshv1.SignResponse, error) {
	s := svc.s
	key := resource.Key{Mesh: req.GetMesh(), Name: req.GetName()}
	admit, err := s.authorize(ctx, "sign", key)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(req.GetCsr())
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, status.Error(codes.InvalidArgument, "csr: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	view, _ := s.opts.Views.View()
	if view == nil {
		return nil, status.Error(codes.Unavailable, "the control plane is starting")
	}
	dp := view.Get(resource.KindDataplane, key)
	mesh := view.Get(resource.KindMesh, resource.Key{Name: key.Mesh})
	if dp == nil || mesh == nil {
		return nil, status.Errorf(codes.NotFound, "dataplane %s is not registered", key)
	}
	if err := s.admit("sign", key, admit, dp, Certify); err != nil {
		return nil, err
	}
	backend := ca.Enabled(mesh.Mesh())
	if backend == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "mesh %q has no mTLS enabled", key.Mesh)
	}
	secrets := func(m, name string) *resource.Object {
		return view.Get(resource.KindSecret, resource.Key{Mesh: m, Name: name})
	}
	caPair, err := ca.Load(secrets, key.Mesh, backend.Name)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	spec := dp.Dataplane()
	subject := ca.Subject{Mesh: key.Mesh, Tags: spec.TagValues()}
	if spec.Networking != nil {
		for _, a := range []string{spec.Networking.Address, spec.Networking.AdvertisedAddress} {
			if ip := net.ParseIP(a); ip != nil {
				subject.IPs = append(subject.IPs, ip)
			}
		}
	}
	cert, err := ca.IssueWorkload(caPair, subject, csr.PublicKey, ca.WorkloadLifetime(backend), s.opts.Now())
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	bundle, version := ca.TrustBundle(secrets, key.Mesh, mesh.Mesh())
	s.log.Info("issued a workload certificate", "dataplane", key.String(), "not_after", cert.Cert.NotAfter)
	return &meshv1.SignResponse{
		CertChain:   append(append([]byte{}, cert.CertPEM...), caPair.CertPEM...),
		TrustBundle: bundle,
		CaVersion:   version,
	}, nil
}
