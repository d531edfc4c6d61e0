package iadvize

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The OpenAPI document of the root help (what Vault merges into
// sys/internal/specs/openapi) holds every request schema in place, with no
// "$ref": Vault drops an external plugin's "$ref"s when it decodes the document.
func TestHelpOpenAPIInlinesSchemas(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	e.system.PluginEnvironment = &logical.PluginEnvironment{VaultVersion: "v1.21.0"} // the root help asks for it
	resp, err := e.do(logical.HelpOperation, "", nil)
	if err != nil || resp == nil {
		t.Fatalf("root help: %v", err)
	}
	doc, ok := resp.Data["openapi"].(*framework.OASDocument)
	if !ok {
		t.Fatalf("root help has no OpenAPI document: %T", resp.Data["openapi"])
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"$ref"`) {
		t.Fatalf("the document still refers to components: %s", b)
	}
	if len(doc.Components.Schemas) != 0 {
		t.Errorf("components left after inlining: %v", doc.Components.Schemas)
	}
	for path, fields := range map[string][]string{
		"/config":       {fieldTokenURL, fieldRefreshBefore, fieldCAPEM},
		"/roles/{name}": {fieldUsername, fieldPassword, fieldGrantType},
	} {
		item := doc.Paths[path]
		if item == nil || item.Post == nil || item.Post.RequestBody == nil {
			t.Fatalf("%s: no request body", path)
		}
		schema := item.Post.RequestBody.Content["application/json"].Schema
		for _, f := range fields {
			if p := schema.Properties[f]; p == nil || p.Description == "" {
				t.Errorf("%s: request field %s missing or without a description", path, f)
			}
		}
	}
}
