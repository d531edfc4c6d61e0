package e2e

import (
	"context"
	"encoding/json"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// ourPaths are the plugin's paths as Vault's OpenAPI document names them for
// a mount at iadvize/.
var ourPaths = []string{
	"/iadvize/config",
	"/iadvize/creds/{name}",
	"/iadvize/roles/",
	"/iadvize/roles/{name}",
	"/iadvize/rotate-role/{name}",
	"/iadvize/static-creds/{name}",
	"/iadvize/status/{name}",
	"/iadvize/verify/{name}",
}

// TestOpenAPIDocument fetches Vault's OpenAPI document
// (GET sys/internal/specs/openapi) from a real Vault with the plugin mounted,
// keeps the mount's paths and the components they reference, and validates
// that as an OpenAPI 3 document (kin-openapi). Every operation of ours has an
// operation ID, unique, and every path a summary; every parameter and every
// property of a request or response schema has a description. vault path-help
// of each path lists every field.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})

	resp, err := e.vault.Client.Logical().ReadRaw("sys/internal/specs/openapi")
	if err != nil {
		t.Fatalf("GET sys/internal/specs/openapi: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var full map[string]any
	if err := json.Unmarshal(raw, &full); err != nil {
		t.Fatalf("the OpenAPI document is not JSON: %v", err)
	}
	sub := mountDocument(t, full, "/iadvize/")
	b, err := json.Marshal(sub)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		t.Fatalf("loading the mount's part of the document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the mount's part of the OpenAPI document does not validate: %v", err)
	}

	var got []string
	for p := range doc.Paths.Map() {
		got = append(got, p)
	}
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(ourPaths, " ") {
		t.Errorf("the document's paths under /iadvize/ are %v, want %v", got, ourPaths)
	}

	ids := map[string]string{}
	fields := map[string][]string{} // path -> every parameter and request property
	for _, p := range got {
		item := doc.Paths.Value(p)
		if strings.TrimSpace(item.Description) == "" {
			t.Errorf("%s: no description (HelpSynopsis)", p)
		}
		for _, param := range item.Parameters {
			fields[p] = append(fields[p], param.Value.Name)
			if strings.TrimSpace(param.Value.Description) == "" {
				t.Errorf("%s: parameter %q has no description", p, param.Value.Name)
			}
		}
		for method, op := range item.Operations() {
			where := method + " " + p
			switch {
			case op.OperationID == "":
				t.Errorf("%s: no operationId (DisplayAttrs OperationPrefix/Verb/Suffix)", where)
			case ids[op.OperationID] != "":
				t.Errorf("%s: operationId %q already used by %s", where, op.OperationID, ids[op.OperationID])
			case !strings.HasPrefix(op.OperationID, "iadvize-"):
				t.Errorf("%s: operationId %q lacks the iadvize- prefix", where, op.OperationID)
			default:
				ids[op.OperationID] = where
			}
			if strings.TrimSpace(op.Summary) == "" {
				t.Errorf("%s: no summary (PathOperation.Summary)", where)
			}
			for _, param := range op.Parameters {
				if strings.TrimSpace(param.Value.Description) == "" {
					t.Errorf("%s: parameter %q has no description", where, param.Value.Name)
				}
			}
			if op.RequestBody != nil {
				for _, mt := range op.RequestBody.Value.Content {
					if len(mt.Schema.Value.Properties) == 0 {
						t.Errorf("%s: the request body's schema has no properties", where)
					}
					for name, prop := range mt.Schema.Value.Properties {
						fields[p] = append(fields[p], name)
						if strings.TrimSpace(prop.Value.Description) == "" {
							t.Errorf("%s: request field %q has no description", where, name)
						}
					}
				}
			}
			for code, r := range op.Responses.Map() {
				for _, mt := range r.Value.Content {
					if mt.Schema == nil {
						continue
					}
					for name, prop := range mt.Schema.Value.Properties {
						if name == "keys" && strings.HasSuffix(p, "/") {
							continue // the framework's standard list response, not ours
						}
						if strings.TrimSpace(prop.Value.Description) == "" {
							t.Errorf("%s: response %s field %q has no description", where, code, name)
						}
					}
				}
			}
		}
	}
	e.logf("%d paths, %d operations, all with an operationId: %s", len(got), len(ids), strings.Join(sortedKeys(ids), " "))

	// vault path-help of each path lists the same fields as the document.
	for _, p := range got {
		path := strings.TrimPrefix(strings.ReplaceAll(p, "{name}", "x"), "/")
		out, stderr, err := e.cli(vaulttest.RootToken, "path-help", path)
		if err != nil {
			t.Errorf("vault path-help %s: %v %s", path, err, stderr)
			continue
		}
		help := pathHelpFields(out)
		documented := map[string]bool{}
		for _, f := range fields[p] {
			if f != "list" { // Vault's own query parameter of list paths
				documented[f] = true
			}
		}
		if strings.Join(sortedSet(help), " ") != strings.Join(sortedSet(documented), " ") {
			t.Errorf("vault path-help %s lists fields %v, the OpenAPI document %v", path, sortedSet(help), sortedSet(documented))
		}
	}
}

// pathHelpFields returns the fields of vault path-help's PARAMETERS section;
// one without a description is named "<field> (no description)".
func pathHelpFields(out string) map[string]bool {
	fields := map[string]bool{}
	_, params, _ := strings.Cut(out, "## PARAMETERS\n")
	params, _, _ = strings.Cut(params, "\n## ")
	lines := strings.Split(params, "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "     ") {
			continue
		}
		name, _, ok := strings.Cut(strings.TrimSpace(line), " (")
		if !ok {
			continue
		}
		// The description follows after a blank line, indented further.
		if i+2 < len(lines) && strings.HasPrefix(lines[i+2], "        ") && strings.TrimSpace(lines[i+2]) != "" {
			fields[name] = true
		} else {
			fields[name+" (no description)"] = true
		}
	}
	return fields
}

func sortedSet(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// mountDocument returns the OpenAPI document made of full's paths under prefix
// and the components they reference, directly or through other components.
func mountDocument(t *testing.T, full map[string]any, prefix string) map[string]any {
	t.Helper()
	paths, _ := full["paths"].(map[string]any)
	ours := map[string]any{}
	for p, item := range paths {
		if strings.HasPrefix(p, prefix) {
			ours[p] = item
		}
	}
	if len(ours) == 0 {
		t.Fatalf("the OpenAPI document has no path under %s", prefix)
	}
	components, _ := full["components"].(map[string]any)
	kept := map[string]map[string]any{} // kind -> name -> component
	pending := refsIn(ours)
	for len(pending) > 0 {
		ref := pending[0]
		pending = pending[1:]
		kind, name, ok := strings.Cut(strings.TrimPrefix(ref, "#/components/"), "/")
		if !ok || !strings.HasPrefix(ref, "#/components/") {
			t.Fatalf("unexpected $ref %q", ref)
		}
		if kept[kind][name] != nil {
			continue
		}
		byKind, _ := components[kind].(map[string]any)
		c, ok := byKind[name]
		if !ok {
			t.Fatalf("$ref %q: no such component in Vault's document", ref)
		}
		if kept[kind] == nil {
			kept[kind] = map[string]any{}
		}
		kept[kind][name] = c
		pending = append(pending, refsIn(c)...)
	}
	comps := map[string]any{}
	for kind, cs := range kept {
		comps[kind] = cs
	}
	return map[string]any{
		"openapi":    full["openapi"],
		"info":       full["info"],
		"paths":      ours,
		"components": comps,
	}
}

// refsIn lists every "$ref" value in v.
func refsIn(v any) []string {
	var refs []string
	switch x := v.(type) {
	case map[string]any:
		for k, y := range x {
			if s, ok := y.(string); ok && k == "$ref" {
				refs = append(refs, s)
				continue
			}
			refs = append(refs, refsIn(y)...)
		}
	case []any:
		for _, y := range x {
			refs = append(refs, refsIn(y)...)
		}
	}
	return refs
}
