#!/usr/bin/env bash
# Prints the path of a staticcheck binary at the pinned release, installing it
# from the Go module proxy on first use (seconds to a minute).
#
# Usage: scripts/staticcheck.sh [--cached-only]
# STATICCHECK_BIN, when set, is used as is. Otherwise honnef.co/go/tools at
# STATICCHECK_VERSION is built with `go install` into the cache outside the
# repository, keyed by version (make lint runs it over ./...). The version must
# know the Go of go.mod: v0.8 is the release line for Go 1.26.
set -euo pipefail

STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"

# shellcheck source=scripts/tool-cache.sh
source "$(dirname "$0")/tool-cache.sh"
tool_cache_prepare staticcheck "$STATICCHECK_VERSION" STATICCHECK_BIN "${1:-}"
echo "staticcheck.sh: installing staticcheck $STATICCHECK_VERSION from the Go module proxy (once; then $bin is reused)" >&2

(cd "$work" && GOFLAGS= GOBIN="$work/bin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION")
mv "$work/bin/staticcheck" "$bin"
"$bin" -version >&2
echo "$bin"
