package iadvize

import (
	"context"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const componentSchemaPrefix = "#/components/schemas/"

// handleHelp answers a help request (vault path-help, and Vault's OpenAPI
// document, GET sys/internal/specs/openapi, which asks every mount for its
// root help) with the request and response schemas written out in place of
// their "$ref" to components.
//
// Vault decodes an external plugin's OpenAPI document with mapstructure into
// framework.OASSchema, whose Ref field has no mapstructure tag: every "$ref"
// is dropped, and the merged document would show each request body as an empty
// schema, with our fields only in unreferenced components (Vault v1.21.0, sdk
// v0.25.1). Inline schemas survive that decoding.
func (b *backend) handleHelp(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	resp, err := b.Backend.HandleRequest(ctx, req)
	if err != nil || resp == nil {
		return resp, err
	}
	if doc, ok := resp.Data["openapi"].(*framework.OASDocument); ok {
		inlineSchemaRefs(doc)
		nameReportOperations(doc)
	}
	return resp, nil
}

// nameReportOperations gives the refused-token reports (the update of creds/
// and static-creds/) their own operation ID and summary: those paths use
// Callbacks (see pathCreds), which give every operation the path's display
// attributes, so both operations would share the read's ID.
func nameReportOperations(doc *framework.OASDocument) {
	for _, item := range doc.Paths {
		if item.Get == nil || item.Post == nil || item.Post.OperationID != item.Get.OperationID {
			continue
		}
		if r, ok := reportOperations[item.Get.OperationID]; ok {
			item.Post.OperationID, item.Post.Summary = r.id, r.summary
		}
	}
}

// inlineSchemaRefs replaces each request and response schema that refers to a
// component schema of doc with that schema, and drops the components it
// inlined (the framework refers to component schemas from nowhere else).
func inlineSchemaRefs(doc *framework.OASDocument) {
	inlined := map[string]bool{}
	inline := func(c framework.OASContent) {
		for _, mt := range c {
			if mt == nil || mt.Schema == nil {
				continue
			}
			name, ok := strings.CutPrefix(mt.Schema.Ref, componentSchemaPrefix)
			if s := doc.Components.Schemas[name]; ok && s != nil {
				mt.Schema = s
				inlined[name] = true
			}
		}
	}
	for _, item := range doc.Paths {
		for _, op := range []*framework.OASOperation{item.Get, item.Post, item.Patch, item.Delete} {
			if op == nil {
				continue
			}
			if op.RequestBody != nil {
				inline(op.RequestBody.Content)
			}
			for _, r := range op.Responses {
				if r != nil {
					inline(r.Content)
				}
			}
		}
	}
	for name := range inlined {
		delete(doc.Components.Schemas, name)
	}
}
