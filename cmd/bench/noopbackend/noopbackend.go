// Package noopbackend is a do-nothing Vault secrets engine, the benchmark's
// reference for the cost of an external plugin: Vault's request handling, the
// gRPC hop to a plugin process and the sdk's framework, with no work of its own.
// Every read of data/<name> answers constant data of the same shape and size as
// an iadvize creds/ answer (access_token, token_type, expire_time).
//
// legacy/<name> answers the same through the framework's deprecated Callbacks
// map instead of Operations: the framework then skips the ReplicationState call
// it makes for every request to a path with Operations, which in a plugin
// process is a gRPC round trip back to Vault. The benchmark measures that call
// as the difference between the two paths.
package noopbackend

import (
	"context"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The constant answer. The access token has the length of the fake upstream's
// tokens (32 random bytes, base64url: 43 characters); expire_time is RFC 3339 in
// UTC, as creds/ answers it.
const (
	AccessToken = "nooptokennooptokennooptokennooptokennooptok"
	TokenType   = "Bearer"
	ExpireTime  = "2026-01-01T00:00:00Z"
)

// Factory is the plugin's entry point: Vault calls it once per mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := New()
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// New returns the backend, not yet set up.
func New() *framework.Backend {
	return &framework.Backend{
		Help:        strings.TrimSpace(help),
		BackendType: logical.TypeLogical,
		Paths: []*framework.Path{{
			Pattern: "data/" + framework.MatchAllRegex("name"),
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "Any name."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: read},
			},
			HelpSynopsis: "Constant data, for benchmarks.",
		}, {
			Pattern: "legacy/" + framework.MatchAllRegex("name"),
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "Any name."},
			},
			//nolint:staticcheck // deprecated on purpose: the comparison is the point
			Callbacks: map[logical.Operation]framework.OperationFunc{
				logical.ReadOperation: read,
			},
			HelpSynopsis: "Constant data through the legacy Callbacks map, for benchmarks.",
		}},
	}
}

func read(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	return &logical.Response{Data: map[string]any{
		"access_token": AccessToken,
		"token_type":   TokenType,
		"expire_time":  ExpireTime,
	}}, nil
}

const help = `
A do-nothing secrets engine for benchmarks: data/<name> answers every read with
the same constant data, the size of an iadvize creds/ answer.
`
