#!/usr/bin/env bash
# Prints the path of a Vault binary at the pinned release, building it on first use.
#
# Usage: scripts/vault.sh [--cached-only]
# VAULT_BIN, when set, is used as is. Otherwise Vault is built from the Go module
# proxy in a throwaway wrapper module that requires github.com/hashicorp/vault at
# VAULT_VERSION, carries that release's non-local replace lines and pins vault/api
# and vault/sdk to the versions the release's go.mod requires. The binary is cached
# outside the repository, keyed by version, so only the first run pays the build.
set -euo pipefail

VAULT_VERSION="${VAULT_VERSION:-v1.21.0}"

# shellcheck source=scripts/tool-cache.sh
source "$(dirname "$0")/tool-cache.sh"
tool_cache_prepare vault "$VAULT_VERSION" VAULT_BIN "${1:-}"
echo "vault.sh: building Vault $VAULT_VERSION from the Go module proxy. This takes several minutes (6 to 15 on" \
  "2 cores) and prints nothing more until it is done; it happens once, then $bin is reused." >&2

gomod=$(module_gomod "github.com/hashicorp/vault@$VAULT_VERSION")
api_version=$(awk '$1 == "github.com/hashicorp/vault/api" && $2 ~ /^v/ {print $2; exit}' "$gomod")
sdk_version=$(awk '$1 == "github.com/hashicorp/vault/sdk" && $2 ~ /^v/ {print $2; exit}' "$gomod")
go_directive=$(awk '$1 == "go" {print $2; exit}' "$gomod")
[ -n "$api_version" ] && [ -n "$sdk_version" ] || { echo "no vault/api or vault/sdk version in $gomod" >&2; exit 1; }

cat >"$work/go.mod" <<MOD
module vaultwrapper

go $go_directive

require (
	github.com/hashicorp/vault $VAULT_VERSION
	github.com/hashicorp/vault/api $api_version
	github.com/hashicorp/vault/sdk $sdk_version
)

replace github.com/99designs/keyring => github.com/Jeffail/keyring v1.2.3

replace github.com/ma314smith/signedxml v1.1.1 => github.com/moov-io/signedxml v1.1.1
MOD
cat >"$work/tools.go" <<'GO'
//go:build tools

package vaultwrapper

import _ "github.com/hashicorp/vault"
GO

(cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -mod=mod -ldflags='-s -w' -o "$bin.tmp" github.com/hashicorp/vault)
mv "$bin.tmp" "$bin"
"$bin" version >&2
echo "$bin"
