package kumactl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
)

func newGenerateCmd(rc *RootContext) *cobra.Command {
	cmd := newGroupCmd("generate", "Generate tokens and certificates",
		"Ask the control plane for a token or a certificate (admins only).")
	cmd.AddCommand(newGenerateDataplaneTokenCmd(rc), newGenerateUserTokenCmd(rc), newGenerateScraperCertificateCmd(rc))
	return cmd
}

func newGenerateDataplaneTokenCmd(rc *RootContext) *cobra.Command {
	var mesh, name string
	var validFor time.Duration
	cmd := &cobra.Command{
		Use:   "dataplane-token",
		Short: "Generate the token with which one dataplane's proxy connects",
		Long: "Generate a dataplane token: the proxy of the Dataplane --name in --mesh presents it to the " +
			"control plane, which refuses it for any other dataplane or mesh.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if mesh == "" {
				return errors.New("--mesh must not be empty")
			}
			if name == "" {
				return errors.New("--name must not be empty")
			}
			if validFor < 0 {
				return fmt.Errorf("--valid-for must not be negative, got %s", validFor)
			}
			client, err := rc.client()
			if err != nil {
				return err
			}
			token, err := client.GenerateDataplaneToken(c.Context(), mesh, name, validFor)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(rc.Stdout, token)
			return err
		},
	}
	cmd.Flags().StringVarP(&mesh, "mesh", "m", resource.DefaultMesh, "mesh of the dataplane")
	cmd.Flags().StringVar(&name, "name", "", "name of the Dataplane (required)")
	cmd.Flags().DurationVar(&validFor, "valid-for", 0, "how long the token is valid, such as 24h or 30m (default: it never expires)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func newGenerateUserTokenCmd(rc *RootContext) *cobra.Command {
	var name string
	var groups []string
	var validFor time.Duration
	cmd := &cobra.Command{
		Use:   "user-token",
		Short: "Generate a user token for the control plane's API",
		Long: "Generate a user token. Group mesh-system:admin makes an admin; other users may read " +
			"what anonymous clients may read. Use it with `kumactl config control-planes add --auth-type=tokens --auth-conf token=TOKEN`.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("--name must not be empty")
			}
			for _, g := range groups {
				if g == "" {
					return errors.New("--group must not be empty")
				}
			}
			if validFor < 0 {
				return fmt.Errorf("--valid-for must not be negative, got %s", validFor)
			}
			client, err := rc.client()
			if err != nil {
				return err
			}
			token, err := client.GenerateUserToken(c.Context(), name, groups, validFor)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(rc.Stdout, token)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the user (required)")
	cmd.Flags().StringArrayVar(&groups, "group", nil, "a group of the user (repeat for several), such as mesh-system:admin")
	cmd.Flags().DurationVar(&validFor, "valid-for", 0, "how long the token is valid, such as 24h or 30m (default: it never expires)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func newGenerateScraperCertificateCmd(rc *RootContext) *cobra.Command {
	var mesh, service, outDir string
	var validFor time.Duration
	cmd := &cobra.Command{
		Use:   "scraper-certificate",
		Short: "Generate a client certificate of a mesh's CA for a Prometheus outside the mesh",
		Long: "Generate a key here, have the mesh's CA certify it as spiffe://<mesh>/<service>, and write " +
			"cert.pem, key.pem and ca.pem to --out-dir. A Prometheus using them scrapes the mesh's proxies over " +
			"mTLS where a TrafficPermission lets --service reach the metrics endpoints (kuma.io/service: dataplane-metrics).",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			switch {
			case mesh == "":
				return errors.New("--mesh must not be empty")
			case service == "":
				return errors.New("--service must not be empty")
			case outDir == "":
				return errors.New("--out-dir must not be empty")
			case validFor < 0:
				return fmt.Errorf("--valid-for must not be negative, got %s", validFor)
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: service}}, key)
			if err != nil {
				return err
			}
			client, err := rc.client()
			if err != nil {
				return err
			}
			cert, err := client.GenerateScraperCertificate(c.Context(), mesh, service,
				pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), validFor)
			if err != nil {
				return err
			}
			keyPEM, err := pki.EncodeKey(key)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(outDir, 0o755); err != nil {
				return fmt.Errorf("--out-dir: %w", err)
			}
			abs, err := filepath.Abs(outDir)
			if err != nil {
				return err
			}
			for _, f := range []struct {
				name string
				data string
				mode os.FileMode
			}{{"key.pem", string(keyPEM), 0o600}, {"cert.pem", cert.Certificate, 0o644}, {"ca.pem", cert.CABundle, 0o644}} {
				if err := os.WriteFile(filepath.Join(abs, f.name), []byte(f.data), f.mode); err != nil {
					return fmt.Errorf("--out-dir: %w", err)
				}
			}
			_, err = fmt.Fprintf(rc.Stdout, scraperHowTo, abs, mesh, service, cert.NotAfter, abs, abs, abs, mesh, service)
			return err
		},
	}
	cmd.Flags().StringVarP(&mesh, "mesh", "m", resource.DefaultMesh, "mesh whose CA issues the certificate")
	cmd.Flags().StringVar(&service, "service", "prometheus", "identity of the scraper, matched by TrafficPermission sources")
	cmd.Flags().StringVar(&outDir, "out-dir", "", "directory for cert.pem, key.pem and ca.pem (required)")
	cmd.Flags().DurationVar(&validFor, "valid-for", 0, "how long the certificate is valid (default 8760h)")
	_ = cmd.MarkFlagRequired("out-dir")
	return cmd
}

const scraperHowTo = `Wrote %s/{cert.pem,key.pem,ca.pem}: spiffe://%s/%s, valid until %s.

Scrape the proxies over mTLS: discovery advertises https for them; add to the job in prometheus.yml:

  tls_config:
    ca_file: %s/ca.pem
    cert_file: %s/cert.pem
    key_file: %s/key.pem

and let the scraper reach the metrics endpoints:

  type: TrafficPermission
  mesh: %s
  name: metrics-permissions
  sources:
  - match:
      kuma.io/service: %s
  destinations:
  - match:
      kuma.io/service: dataplane-metrics
`
