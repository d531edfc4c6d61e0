#!/usr/bin/env bash
# Prints the path of an Ory Hydra binary at the pinned release, building it on first use.
#
# Usage: scripts/hydra.sh [--cached-only]
# HYDRA_BIN, when set, is used as is. Otherwise Hydra is built from the Go module
# proxy in a throwaway wrapper module that requires github.com/ory/hydra/v2 at
# HYDRA_VERSION and carries the release's one non-local replace line (gobuffalo/pop
# => ory/pop, at the version the release's go.mod pins). It is built with CGO and the
# sqlite tags so `DSN=memory` works. The binary is cached outside the repository,
# keyed by version, so only the first run pays the build. The end-to-end suite uses
# it as a real RFC 6749 token endpoint.
set -euo pipefail

HYDRA_VERSION="${HYDRA_VERSION:-v2.3.0}"

# shellcheck source=scripts/tool-cache.sh
source "$(dirname "$0")/tool-cache.sh"
tool_cache_prepare hydra "$HYDRA_VERSION" HYDRA_BIN "${1:-}"

command -v gcc >/dev/null || { echo "building Hydra needs a C compiler (gcc) for its sqlite driver" >&2; exit 1; }
echo "building Ory Hydra $HYDRA_VERSION from the Go module proxy (first run only, several minutes)..." >&2

gomod=$(module_gomod "github.com/ory/hydra/v2@$HYDRA_VERSION")
# The release's replace line for pop: "replace github.com/gobuffalo/pop/v6 => github.com/ory/pop/v6 <version>".
pop_version=$(awk '$1 == "replace" && $2 == "github.com/gobuffalo/pop/v6" && $3 == "=>" && $4 == "github.com/ory/pop/v6" {print $5; exit}' "$gomod")
go_directive=$(awk '$1 == "go" {print $2; exit}' "$gomod")
[ -n "$pop_version" ] || { echo "no github.com/gobuffalo/pop/v6 replace line in $gomod" >&2; exit 1; }

cat >"$work/go.mod" <<MOD
module hydrawrapper

go $go_directive

require github.com/ory/hydra/v2 $HYDRA_VERSION

replace github.com/gobuffalo/pop/v6 => github.com/ory/pop/v6 $pop_version
MOD
cat >"$work/tools.go" <<'GO'
//go:build tools

package hydrawrapper

import _ "github.com/ory/hydra/v2"
GO

(cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=1 go build -mod=mod -tags sqlite,sqlite_omit_load_extension \
  -ldflags='-s -w' -o "$bin.tmp" github.com/ory/hydra/v2)
mv "$bin.tmp" "$bin"
"$bin" version >&2 || true
echo "$bin"
