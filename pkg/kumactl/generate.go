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
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/authn"
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
	var tagFlags []string
	var validFor time.Duration
	cmd := &cobra.Command{
		Use:   "dataplane-token",
		Short: "Generate the token with which one dataplane's proxy connects",
		Long: "Generate a dataplane token: the proxy of the Dataplane --name in --mesh presents it to the " +
			"control plane, which refuses it for any other dataplane or mesh, and for a Dataplane whose inbounds " +
			"carry tag values the token does not allow (--tag kuma.io/service=backend; '*' allows any value). " +
			"Without --tag the token allows the services of the stored Dataplane of that name.",
		Example: "  kumactl generate dataplane-token --mesh default --name backend-1 --tag kuma.io/service=backend --valid-for 720h > backend-1.token",
		Args:    cobra.NoArgs,
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
			tags, err := parseTokenTags(tagFlags)
			if err != nil {
				return err
			}
			client, err := rc.client()
			if err != nil {
				return err
			}
			token, err := client.GenerateDataplaneToken(c.Context(), apiclient.DataplaneTokenRequest{Mesh: mesh, Name: name, Tags: tags, ValidFor: validFor})
			if err != nil {
				return err
			}
			if len(tags) == 0 {
				noteTokenTags(rc, token, mesh, name)
			}
			_, err = fmt.Fprintln(rc.Stdout, token)
			return err
		},
	}
	cmd.Flags().StringVarP(&mesh, "mesh", "m", resource.DefaultMesh, "mesh of the dataplane")
	cmd.Flags().StringVar(&name, "name", "", "name of the Dataplane (required)")
	cmd.Flags().StringArrayVar(&tagFlags, "tag", nil, "KEY=VALUE[,VALUE...]: values the proxy's inbounds may carry, such as "+
		"kuma.io/service=backend (repeat for several keys; '*' allows any value; default: the services of the stored Dataplane)")
	cmd.Flags().DurationVar(&validFor, "valid-for", 0, "how long the token is valid, such as 24h or 30m (default: it never expires)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// parseTokenTags reads --tag KEY=VALUE[,VALUE...] flags; a key given twice
// collects the values of both.
func parseTokenTags(flags []string) (map[string][]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	tags := map[string][]string{}
	for _, f := range flags {
		k, vs, ok := strings.Cut(f, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--tag %q: must be KEY=VALUE[,VALUE...], such as kuma.io/service=backend", f)
		}
		for _, v := range strings.Split(vs, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				return nil, fmt.Errorf("--tag %q: a value is empty ('*' allows any value)", f)
			}
			tags[k] = append(tags[k], v)
		}
	}
	return tags, nil
}

// noteTokenTags tells on stderr what a token issued without --tag allows:
// the control plane took the services of the stored Dataplane, or (when it
// accepts untagged tokens) constrained nothing. Stdout stays the bare token.
func noteTokenTags(rc *RootContext, token, mesh, name string) {
	id, err := authn.InspectDataplaneToken(token)
	if err != nil {
		return
	}
	if len(id.Tags) == 0 {
		fmt.Fprintf(rc.Stderr, "note: the token allows any service: the control plane accepts untagged tokens; "+
			"use --tag kuma.io/service=... to bind it to the services of dataplane %q\n", name)
		return
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(id.Tags)) {
		parts = append(parts, k+"="+strings.Join(id.Tags[k], ","))
	}
	fmt.Fprintf(rc.Stderr, "note: the token allows %s, the services of the stored Dataplane %q of mesh %q\n", strings.Join(parts, " "), name, mesh)
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
