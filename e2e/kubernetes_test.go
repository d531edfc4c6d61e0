package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"gopkg.in/yaml.v3"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Kubernetes cannot run here. The manifests of examples/kubernetes/ are checked
// by reading them as each operator would (the Vault path and the fields it
// takes, from the operator's own code) and reading that path from a real
// Vault, with the policy and Kubernetes auth role their comments set up.

// k8sObject is one document of a manifest.
type k8sObject map[string]any

// get is the value at a path of map keys, nil if any is missing.
func (o k8sObject) get(keys ...string) any {
	var v any = map[string]any(o)
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// str is the string at a path, "" if missing or not a string.
func (o k8sObject) str(keys ...string) string {
	s, _ := o.get(keys...).(string)
	return s
}

// list is the list at a path, as objects (non-objects left out).
func (o k8sObject) list(keys ...string) []k8sObject {
	var out []k8sObject
	l, _ := o.get(keys...).([]any)
	for _, v := range l {
		if m, ok := v.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func (o k8sObject) String() string {
	return o.str("kind") + " " + o.str("metadata", "namespace") + "/" + o.str("metadata", "name")
}

// k8sManifest is one file of examples/kubernetes/: its objects and the Vault
// commands its header comment gives.
type k8sManifest struct {
	file    string
	objects []k8sObject
	vault   [][]string // each "#   vault ..." comment line, split into arguments
}

func loadManifest(t *testing.T, file string) k8sManifest {
	t.Helper()
	text := example(t, filepath.Join("kubernetes", file))
	m := k8sManifest{file: file}
	dec := yaml.NewDecoder(strings.NewReader(text))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc != nil {
			m.objects = append(m.objects, doc)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if cmd, ok := strings.CutPrefix(line, "#   vault "); ok {
			m.vault = append(m.vault, append([]string{}, strings.Fields(cmd)...))
		}
	}
	return m
}

// one is the single object of kind (and apiVersion) in the manifest.
func (m k8sManifest) one(t *testing.T, apiVersion, kind string) k8sObject {
	t.Helper()
	var found []k8sObject
	for _, o := range m.objects {
		if o.str("kind") == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d %s objects, want 1", m.file, len(found), kind)
	}
	if v := found[0].str("apiVersion"); v != apiVersion {
		t.Errorf("%s: %s has apiVersion %q, want %q", m.file, found[0], v, apiVersion)
	}
	return found[0]
}

// named is the object of kind named name, in namespace ns.
func (m k8sManifest) named(t *testing.T, kind, ns, name string) k8sObject {
	t.Helper()
	for _, o := range m.objects {
		if o.str("kind") == kind && o.str("metadata", "name") == name && o.str("metadata", "namespace") == ns {
			return o
		}
	}
	t.Fatalf("%s: no %s %s/%s, which another object refers to", m.file, kind, ns, name)
	return nil
}

// k8sRead is what a manifest makes an operator read from Vault, and as whom.
type k8sRead struct {
	consumer       string   // the object that reads
	path           string   // the Vault path read (a GET)
	fields         []string // the fields taken from the answer's data
	vsoStatic      bool     // VSO with allowStaticCreds: also needs its static-creds metadata
	role           string   // the Vault Kubernetes auth role it logs in with
	serviceAccount string   // the Kubernetes service account it logs in as
	namespace      string
}

// vsoRead reads a VaultDynamicSecret as Vault Secrets Operator does
// (hashicorp/vault-secrets-operator, controllers/vaultdynamicsecret_controller.go:
// doVault reads vault.JoinPath(spec.mount, spec.path), a GET unless
// requestHTTPMethod or params say otherwise; syncSecret writes every field of
// the answer to spec.destination.name). The fields it needs are the ones the
// Deployments it restarts take from that Secret.
func vsoRead(t *testing.T, m k8sManifest) k8sRead {
	vds := m.one(t, "secrets.hashicorp.com/v1beta1", "VaultDynamicSecret")
	ns := vds.str("metadata", "namespace")
	if v, _ := vds.get("spec", "allowStaticCreds").(bool); !v {
		t.Errorf("%s: %s without allowStaticCreds: true", m.file, vds)
	}
	if meth := vds.str("spec", "requestHTTPMethod"); (meth != "" && meth != "GET") || vds.get("spec", "params") != nil {
		t.Errorf("%s: %s does not read with a GET (requestHTTPMethod %q, params %v)", m.file, vds, meth, vds.get("spec", "params"))
	}
	if create, _ := vds.get("spec", "destination", "create").(bool); !create {
		t.Errorf("%s: %s does not create its destination Secret (VSO then waits for one to exist)", m.file, vds)
	}
	auth := m.named(t, "VaultAuth", ns, vds.str("spec", "vaultAuthRef"))
	if auth.str("spec", "method") != "kubernetes" {
		t.Errorf("%s: %s: method %q, want kubernetes", m.file, auth, auth.str("spec", "method"))
	}
	conn := m.named(t, "VaultConnection", ns, auth.str("spec", "vaultConnectionRef"))
	if !strings.HasPrefix(conn.str("spec", "address"), "https://") {
		t.Errorf("%s: %s: address %q, want https://", m.file, conn, conn.str("spec", "address"))
	}
	secretName := vds.str("spec", "destination", "name")
	r := k8sRead{
		consumer:       vds.String(),
		path:           strings.Trim(vds.str("spec", "mount"), "/") + "/" + strings.Trim(vds.str("spec", "path"), "/"),
		vsoStatic:      true,
		role:           auth.str("spec", "kubernetes", "role"),
		serviceAccount: auth.str("spec", "kubernetes", "serviceAccount"),
		namespace:      ns,
	}
	targets := vds.list("spec", "rolloutRestartTargets")
	if len(targets) == 0 {
		t.Errorf("%s: %s has no rolloutRestartTargets", m.file, vds)
	}
	for _, target := range targets {
		d := m.named(t, target.str("kind"), ns, target.str("name"))
		r.fields = append(r.fields, secretKeysUsed(d, secretName)...)
	}
	if len(r.fields) == 0 {
		t.Errorf("%s: no restarted workload takes a key of the Secret %s", m.file, secretName)
	}
	return r
}

// secretKeysUsed are the keys a workload takes from the Secret named secret.
func secretKeysUsed(workload k8sObject, secret string) []string {
	var keys []string
	for _, c := range workload.list("spec", "template", "spec", "containers") {
		for _, env := range c.list("env") {
			if env.str("valueFrom", "secretKeyRef", "name") == secret {
				keys = append(keys, env.str("valueFrom", "secretKeyRef", "key"))
			}
		}
	}
	return keys
}

// esoRead reads a SecretStore and its ExternalSecret as External Secrets
// Operator's Vault provider does (external-secrets/external-secrets,
// pkg/provider/vault/client_get.go: readSecret GETs buildPath(remoteRef.key),
// which for version v1 is spec.provider.vault.path + "/" + key, the path
// dropped from the key first if it starts with it; with v2 it would insert
// "/data/" and look for the fields under data.data; getSecretValue then takes
// remoteRef.property from the answer's data).
func esoRead(t *testing.T, m k8sManifest) k8sRead {
	store := m.one(t, "external-secrets.io/v1", "SecretStore")
	es := m.one(t, "external-secrets.io/v1", "ExternalSecret")
	ns := store.str("metadata", "namespace")
	provider, _ := store.get("spec", "provider", "vault").(map[string]any)
	vault := k8sObject(provider)
	if v := vault.str("version"); v != "v1" {
		t.Errorf("%s: %s: version %q, want v1 (v2, the default, reads KV v2 paths)", m.file, store, v)
	}
	if ref := es.str("spec", "secretStoreRef", "name"); ref != store.str("metadata", "name") ||
		es.str("spec", "secretStoreRef", "kind") != "SecretStore" || es.str("metadata", "namespace") != ns {
		t.Errorf("%s: %s refers to store %q, not to %s", m.file, es, ref, store)
	}
	if es.get("spec", "dataFrom") != nil {
		t.Errorf("%s: %s has dataFrom: it would copy every field, ttl included, and change the Secret on every read", m.file, es)
	}
	mount := vault.str("path")
	r := k8sRead{
		consumer:       es.String(),
		role:           vault.str("auth", "kubernetes", "role"),
		serviceAccount: vault.str("auth", "kubernetes", "serviceAccountRef", "name"),
		namespace:      ns,
	}
	for _, d := range es.list("spec", "data") {
		key, prop := d.str("remoteRef", "key"), d.str("remoteRef", "property")
		if prop == "" {
			t.Errorf("%s: %s: remoteRef %q selects no property: the Secret would hold the whole answer, ttl included", m.file, es, key)
		}
		path := strings.TrimPrefix(key, mount+"/")
		path = mount + "/" + path
		if r.path != "" && r.path != path {
			t.Errorf("%s: %s reads two paths, %s and %s", m.file, es, r.path, path)
		}
		r.path = path
		r.fields = append(r.fields, prop)
	}
	if r.path == "" {
		t.Errorf("%s: %s reads nothing", m.file, es)
	}
	return r
}

// csiRead reads a SecretProviderClass as the Vault CSI provider does
// (hashicorp/vault-csi-provider: internal/config/config.go parses
// parameters.objects as a YAML list of objectName, secretPath, secretKey,
// method; internal/client/client.go GETs /v1/<secretPath> unless method says
// otherwise; internal/provider/provider.go keyFromData takes secretKey from the
// answer's data, or from data.data when the answer nests one).
func csiRead(t *testing.T, m k8sManifest) k8sRead {
	spc := m.one(t, "secrets-store.csi.x-k8s.io/v1", "SecretProviderClass")
	if p := spc.str("spec", "provider"); p != "vault" {
		t.Errorf("%s: %s: provider %q, want vault", m.file, spc, p)
	}
	ns := spc.str("metadata", "namespace")
	var objects []struct {
		ObjectName string `yaml:"objectName"`
		SecretPath string `yaml:"secretPath"`
		SecretKey  string `yaml:"secretKey"`
		Method     string `yaml:"method"`
	}
	if err := yaml.Unmarshal([]byte(spc.str("spec", "parameters", "objects")), &objects); err != nil || len(objects) == 0 {
		t.Fatalf("%s: %s: parameters.objects is not a YAML list of objects (%v)", m.file, spc, err)
	}
	r := k8sRead{consumer: spc.String(), role: spc.str("spec", "parameters", "roleName"), namespace: ns}
	for _, o := range objects {
		if o.SecretKey == "" {
			t.Errorf("%s: %s: object %q selects no secretKey: the file would hold the whole answer, ttl included", m.file, spc, o.ObjectName)
		}
		if o.Method != "" && o.Method != "GET" {
			t.Errorf("%s: %s: object %q reads with %s, want GET", m.file, spc, o.ObjectName, o.Method)
		}
		path := strings.TrimPrefix(strings.TrimPrefix(o.SecretPath, "/"), "v1/")
		if r.path != "" && r.path != path {
			t.Errorf("%s: %s reads two paths, %s and %s", m.file, spc, r.path, path)
		}
		r.path = path
		r.fields = append(r.fields, o.SecretKey)
	}
	// The pods mounting the class log in as their own service account.
	for _, o := range m.objects {
		for _, v := range o.list("spec", "template", "spec", "volumes") {
			if v.str("csi", "driver") == "secrets-store.csi.k8s.io" &&
				v.str("csi", "volumeAttributes", "secretProviderClass") == spc.str("metadata", "name") {
				r.serviceAccount = o.str("spec", "template", "spec", "serviceAccountName")
			}
		}
	}
	if r.serviceAccount == "" {
		t.Errorf("%s: no workload mounts %s with a service account of its own", m.file, spc)
	}
	return r
}

// vaultSetup checks the manifest's "vault policy write" and "vault write
// auth/kubernetes/role/..." comment lines against what the consumer logs in as,
// and returns them.
func vaultSetup(t *testing.T, m k8sManifest, r k8sRead) (policyWrites, roleWrite [][]string) {
	t.Helper()
	var policies []string
	for _, cmd := range m.vault {
		switch {
		case len(cmd) == 4 && cmd[0] == "policy" && cmd[1] == "write":
			policyWrites = append(policyWrites, cmd)
			policies = append(policies, cmd[2])
		case len(cmd) > 2 && cmd[0] == "write" && cmd[1] == "auth/kubernetes/role/"+r.role:
			roleWrite = append(roleWrite, cmd)
			params := map[string][]string{}
			for _, kv := range cmd[2:] {
				k, v, _ := strings.Cut(kv, "=")
				params[k] = strings.Split(v, ",")
			}
			for k, want := range map[string]string{
				"bound_service_account_names": r.serviceAccount, "bound_service_account_namespaces": r.namespace,
			} {
				if !slices.Contains(params[k], want) {
					t.Errorf("%s: the role's %s=%v does not name %q, which %s logs in as", m.file, k, params[k], want, r.consumer)
				}
			}
			for _, p := range params["token_policies"] {
				if !slices.Contains(policies, p) {
					t.Errorf("%s: the role gives policy %q, which no `vault policy write` line writes", m.file, p)
				}
			}
		}
	}
	if len(policyWrites) == 0 || len(roleWrite) != 1 {
		t.Fatalf("%s: %d `vault policy write` and %d `vault write auth/kubernetes/role/%s` comment lines, want at least 1 and 1",
			m.file, len(policyWrites), len(roleWrite), r.role)
	}
	return policyWrites, roleWrite
}

// TestKubernetesExamples: each manifest of examples/kubernetes/ names a path
// its operator reads with a GET, and fields it takes from the answer; the
// Vault commands of its header (the crm-sync policy, a Kubernetes auth role
// giving it to the service account the operator logs in as) run as written on
// a real Vault; a token with the role's policies, and nothing else, reads that
// path and gets every field. VSO also gets what makes the answer static
// credentials (last_vault_rotation, rotation_period >= 1, integer ttl), ESO and
// CSI select access_token only.
func TestKubernetesExamples(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("crm-sync", "svc-k8s")
	// The Kubernetes auth method, configured for a cluster that is never called:
	// roles can be written and read, not logged in with.
	e.write("sys/auth/kubernetes", map[string]any{"type": "kubernetes"})
	e.write("auth/kubernetes/config", map[string]any{
		"kubernetes_host": "https://127.0.0.1:6443", "disable_local_ca_jwt": true,
	})

	root := vaulttest.RepoRoot(t)
	for _, c := range []struct {
		file string
		read func(*testing.T, k8sManifest) k8sRead
	}{
		{"vault-secrets-operator.yaml", vsoRead},
		{"external-secrets.yaml", esoRead},
		{"secrets-store-csi.yaml", csiRead},
	} {
		m := loadManifest(t, c.file)
		r := c.read(t, m)
		if r.path != "iadvize/static-creds/crm-sync" {
			t.Errorf("%s: %s reads %q, want iadvize/static-creds/crm-sync", c.file, r.consumer, r.path)
		}
		if !r.vsoStatic && !slices.Equal(r.fields, []string{"access_token"}) {
			t.Errorf("%s: %s takes %v, want access_token only", c.file, r.consumer, r.fields)
		}
		policyWrites, roleWrite := vaultSetup(t, m, r)
		if t.Failed() {
			t.FailNow()
		}

		// The header's commands, as written (the policy file from the
		// repository's root, where the comment runs them).
		for _, cmd := range append(policyWrites, roleWrite...) {
			args := slices.Clone(cmd)
			if args[0] == "policy" {
				args[3] = filepath.Join(root, args[3])
			}
			if out, stderr, err := e.cli(vaulttest.RootToken, args...); err != nil {
				e.fatalf("%s: vault %s: %v\n%s%s", c.file, strings.Join(cmd, " "), err, out, stderr)
			}
		}
		role := e.read("auth/kubernetes/role/" + r.role)
		var policies []string
		list, _ := role.Data["token_policies"].([]any)
		for _, p := range list {
			if s, ok := p.(string); ok {
				policies = append(policies, s)
			}
		}
		if len(policies) == 0 {
			t.Fatalf("%s: role %s has no token_policies", c.file, r.role)
		}

		// What a login with that role gets: a token with its policies only.
		tok, err := e.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{
			Policies: policies, NoDefaultPolicy: true, TTL: "10m",
		})
		if err != nil {
			t.Fatal(err)
		}
		client, err := e.vault.Client.Clone()
		if err != nil {
			t.Fatal(err)
		}
		client.SetToken(tok.Auth.ClientToken)
		client.SetMaxRetries(0)
		s, err := client.Logical().Read(r.path)
		if err != nil || s == nil {
			e.fatalf("%s: %s with policies %v: read %s: %s", c.file, r.consumer, policies, r.path, brief(err))
		}
		if s.LeaseID != "" || s.LeaseDuration != 0 {
			t.Errorf("%s: %s got a lease (%ds)", c.file, r.path, s.LeaseDuration)
		}
		complete := true
		for _, f := range r.fields {
			if v, ok := s.Data[f]; !ok || v == nil || v == "" {
				complete = false
				t.Errorf("%s: %s takes %q from %s, which the answer lacks or leaves empty", c.file, r.consumer, f, r.path)
			}
		}
		if !e.up.wasIssued(accessToken(s)) {
			t.Errorf("%s: %s: access_token is not a token of the fake", c.file, r.path)
		}
		if r.vsoStatic {
			meta, err := vsoStaticMeta(s.Data)
			if err != nil || !meta.static() {
				t.Errorf("%s: VSO would not take %s for static credentials: %+v, %v", c.file, r.path, meta, err)
			}
		}
		takes := fmt.Sprint(r.fields)
		if r.vsoStatic {
			takes += " and its static-creds metadata"
		}
		if complete {
			e.logf("%s: %s reads %s as role %s (policies %v) and takes %s: all there", c.file, r.consumer, r.path, r.role, policies, takes)
		}
	}
}

// vsoStaticCredsMeta is VSO's VaultStaticCredsMetaData (api/v1beta1), as
// vaultStaticCredsMetaDataFromData fills it from an answer's data
// (controllers/vaultdynamicsecret_controller.go).
type vsoStaticCredsMeta struct {
	LastVaultRotation int64 // Unix seconds: VSO drops the rest
	RotationPeriod    int64
	RotationSchedule  string
	TTL               int64
}

// vsoStaticMeta parses the metadata as VSO does: last_vault_rotation with
// time.RFC3339Nano, rotation_period and ttl as JSON integers (json.Number from
// the Vault client; any other type is an error).
func vsoStaticMeta(data map[string]any) (vsoStaticCredsMeta, error) {
	var m vsoStaticCredsMeta
	if v, ok := data["last_vault_rotation"]; ok && v != nil {
		s, _ := v.(string)
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return m, fmt.Errorf("invalid last_vault_rotation %w", err)
		}
		m.LastVaultRotation = ts.Unix()
	}
	for _, f := range []struct {
		name string
		to   *int64
	}{{"rotation_period", &m.RotationPeriod}, {"ttl", &m.TTL}} {
		if v, ok := data[f.name]; ok && v != nil {
			n, ok := v.(json.Number)
			if !ok {
				return m, fmt.Errorf("invalid %s: %T", f.name, v)
			}
			i, err := n.Int64()
			if err != nil {
				return m, fmt.Errorf("invalid %s: %w", f.name, err)
			}
			*f.to = i
		}
	}
	if s, ok := data["rotation_schedule"].(string); ok {
		m.RotationSchedule = s
	}
	return m, nil
}

// static is VSO's isStaticCreds: the ldap and database engines' minimum
// rotation period is 5 s, VSO asks for 1 s.
func (m vsoStaticCredsMeta) static() bool {
	return m.LastVaultRotation > 0 && (m.RotationPeriod >= 1 || m.RotationSchedule != "")
}

// vsoData is the answer's data as VSO puts it in the destination Secret
// (vault.Response.SecretK8sData: strings as they are, other values as JSON, and
// _raw, the whole data as JSON).
func vsoData(data map[string]any) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range data {
		if s, ok := v.(string); ok {
			out[k] = []byte(s)
		} else {
			out[k], _ = json.Marshal(v)
		}
	}
	out["_raw"], _ = json.Marshal(data)
	return out
}
