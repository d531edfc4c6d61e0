// Package noopbackend is a do-nothing Vault secrets engine, the benchmark's
// reference for the cost of an external plugin: Vault's request handling, the
// gRPC hop to a plugin process and the sdk's framework, with no work of its own.
// A read of data/<name> answers constant data of the shape and size of an
// iadvize creds/ answer. legacy/<name> answers the same through the framework's
// deprecated Callbacks map instead of Operations, which skips the
// ReplicationState call (a gRPC round trip back to Vault) the framework makes
// for every request to a path with Operations.
package noopbackend

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Factory is the plugin's entry point: Vault calls it once per mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	fields := map[string]*framework.FieldSchema{"name": {Type: framework.TypeString, Description: "Any name."}}
	b := &framework.Backend{
		Help:        "A do-nothing secrets engine for benchmarks.",
		BackendType: logical.TypeLogical,
		Paths: []*framework.Path{{
			Pattern:    "data/" + framework.MatchAllRegex("name"),
			Fields:     fields,
			Operations: map[logical.Operation]framework.OperationHandler{logical.ReadOperation: &framework.PathOperation{Callback: read}},
		}, {
			Pattern: "legacy/" + framework.MatchAllRegex("name"),
			Fields:  fields,
			//nolint:staticcheck // deprecated on purpose: the comparison is the point
			Callbacks: map[logical.Operation]framework.OperationFunc{logical.ReadOperation: read},
		}},
	}
	return b, b.Setup(ctx, conf)
}

// read answers an access token of the fake upstream's length (43 characters),
// and expire_time in RFC 3339, as creds/ does.
func read(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	return &logical.Response{Data: map[string]any{
		"access_token": "nooptokennooptokennooptokennooptokennooptok",
		"token_type":   "Bearer",
		"expire_time":  "2026-01-01T00:00:00Z",
	}}, nil
}
