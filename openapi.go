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
	// inline returns c with its schemas inlined, as a new map of new media
	// types: the framework shares some of them between documents (its standard
	// list response), so they are never changed in place.
	inline := func(c framework.OASContent) framework.OASContent {
		out := make(framework.OASContent, len(c))
		for k, mt := range c {
			out[k] = mt
			if mt == nil || mt.Schema == nil {
				continue
			}
			name, ok := strings.CutPrefix(mt.Schema.Ref, componentSchemaPrefix)
			if s := doc.Components.Schemas[name]; ok && s != nil {
				copied := *mt
				copied.Schema = s
				out[k] = &copied
				inlined[name] = true
			}
		}
		return out
	}
	for _, item := range doc.Paths {
		for _, op := range []*framework.OASOperation{item.Get, item.Post, item.Patch, item.Delete} {
			if op == nil {
				continue
			}
			if op.RequestBody != nil {
				body := *op.RequestBody
				body.Content = inline(body.Content)
				op.RequestBody = &body
			}
			responses := make(map[int]*framework.OASResponse, len(op.Responses))
			for code, r := range op.Responses {
				if r != nil {
					copied := *r
					copied.Content = inline(r.Content)
					r = &copied
				}
				responses[code] = r
			}
			op.Responses = responses
		}
	}
	for name := range inlined {
		delete(doc.Components.Schemas, name)
	}
}
