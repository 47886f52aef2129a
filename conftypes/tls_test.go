package conftypes

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "logship-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestTLSClientConfig: the tls block as a client's configuration, and an
// error naming the key for each file that cannot serve.
func TestTLSClientConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}

	tc, err := TLS{CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "logs.example", InsecureSkipVerify: true}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "logs.example" || !tc.InsecureSkipVerify || tc.MinVersion == 0 {
		t.Fatalf("config %+v", tc)
	}
	if tc, err := (TLS{}).ClientConfig(); err != nil || tc.RootCAs != nil || len(tc.Certificates) != 0 {
		t.Fatalf("empty block: %+v, %v (want the system's roots, no certificate)", tc, err)
	}

	for _, c := range []struct {
		name string
		tls  TLS
		want string
	}{
		{"missing ca_file", TLS{CAFile: filepath.Join(dir, "nope.pem")}, "tls.ca_file"},
		{"ca_file without a certificate", TLS{CAFile: notPEM}, "tls.ca_file: no PEM certificate"},
		{"key that is not one", TLS{CertFile: cert, KeyFile: notPEM}, "tls.cert_file"},
	} {
		_, err := c.tls.ClientConfig()
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error beginning %q", c.name, err, c.want)
		}
	}
	if _, err := (TLS{CAFile: filepath.Join(dir, "nope.pem")}).ClientConfig(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing ca_file: %v does not wrap os.ErrNotExist", err)
	}
}
