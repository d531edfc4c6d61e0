package iadvize

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The OpenAPI document of the root help (what Vault merges into
// sys/internal/specs/openapi) holds every request schema in place, with no
// "$ref": Vault drops an external plugin's "$ref"s when it decodes the document.
func TestHelpOpenAPIInlinesSchemas(t *testing.T) {
	// Two mounts of one process answer help at once, twice: the framework shares
	// some schema objects between documents, which inlining must not change (a
	// data race under -race; then a component left in the second document).
	var wg sync.WaitGroup
	for range 2 {
		for range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); checkInlinedHelp(t) }()
		}
		wg.Wait()
	}
}

// checkInlinedHelp asks a new mount for its root help and checks its OpenAPI
// document: no reference to components is left, and the request fields are there.
func checkInlinedHelp(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	e.system.PluginEnvironment = &logical.PluginEnvironment{VaultVersion: "v1.21.0"} // the root help asks for it
	resp, err := e.do(logical.HelpOperation, "", nil)
	if err != nil || resp == nil {
		t.Errorf("root help: %v", err)
		return
	}
	doc, ok := resp.Data["openapi"].(*framework.OASDocument)
	if !ok {
		t.Errorf("root help has no OpenAPI document: %T", resp.Data["openapi"])
		return
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Error(err)
		return
	}
	if strings.Contains(string(b), `"$ref"`) {
		t.Errorf("the document still refers to components")
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
			t.Errorf("%s: no request body", path)
			continue
		}
		schema := item.Post.RequestBody.Content["application/json"].Schema
		for _, f := range fields {
			if p := schema.Properties[f]; p == nil || p.Description == "" {
				t.Errorf("%s: request field %s missing or without a description", path, f)
			}
		}
	}
}
