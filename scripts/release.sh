#!/usr/bin/env bash
# Builds the plugin's release: one archive per platform and SHA256SUMS, all of
# them reproducible (the same commit and Go toolchain give the same bytes).
#
# Usage: scripts/release.sh VERSION      (normally `make release VERSION=v0.2.0`)
#   VERSION   a semantic version with a leading v (v0.2.0, v1.0.0-rc.1). It is
#             stamped into the binary, which reports it to Vault: register it
#             with `vault plugin register -version=VERSION`.
# Environment:
#   OUT_DIR    where to write (default build/release); replaced by each run
#   PLATFORMS  os/arch pairs (default "linux/amd64 linux/arm64 darwin/amd64 darwin/arm64")
#   GO         the go command (default go)
#
# Writes, for each platform (e.g. linux_amd64):
#   OUT_DIR/linux_amd64/vault-plugin-secrets-iadvize_VERSION         the binary
#   OUT_DIR/vault-plugin-secrets-iadvize_VERSION_linux_amd64.tar.gz  it, alone
# and OUT_DIR/SHA256SUMS, the sha256 of every binary and archive (the binary's is
# the value `vault plugin register -sha256` wants; check a download with
# `sha256sum -c --ignore-missing SHA256SUMS`).
#
# Reproducible: no cgo, -trimpath (no build paths), an empty build ID, no VCS
# stamp, fixed GOAMD64/GOARM64 levels; archives with sorted names, mtime 0,
# owner 0:0, fixed modes, and gzip without name or time. Needs GNU tar.
set -euo pipefail

PLUGIN_NAME=vault-plugin-secrets-iadvize
VERSION_VAR=github.com/iadvize/vault-plugin-secrets-iadvize.Version

die() {
  echo "release: $*" >&2
  exit 1
}

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac
version=${1:-}
[ -n "$version" ] || die "usage: make release VERSION=vX.Y.Z (or scripts/release.sh vX.Y.Z)"
[[ "$version" =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$ ]] ||
  die "VERSION=$version is not a semantic version with a leading v (such as v0.2.0)"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO=${GO:-go}
out=${OUT_DIR:-$root/build/release}
platforms=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}

tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is needed (on macOS: brew install gnu-tar, and put gtar first in PATH as tar)"
if command -v sha256sum >/dev/null; then
  sha256() { sha256sum "$@"; }
else
  sha256() { shasum -a 256 "$@"; }
fi

# Replace OUT_DIR only when it is empty or a previous release (it holds SHA256SUMS).
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/SHA256SUMS" ]; then
  die "OUT_DIR=$out is not empty and holds no SHA256SUMS: refusing to replace it"
fi
mkdir -p "$(dirname "$out")"
stage=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf "$stage"' EXIT

echo "release $version ($("$GO" version | awk '{print $3}')) into $out" >&2
for platform in $platforms; do
  os=${platform%/*}
  arch=${platform#*/}
  [ -n "$os" ] && [ -n "$arch" ] && [ "$os/$arch" = "$platform" ] || die "bad platform $platform (want os/arch)"
  dir="${os}_${arch}"
  bin="${PLUGIN_NAME}_${version}"
  mkdir -p "$stage/$dir"
  echo "  $dir" >&2
  (cd "$root" && env CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOAMD64=v1 GOARM64=v8.0 GOFLAGS=-mod=readonly GOEXPERIMENT= \
    "$GO" build -trimpath -buildvcs=false \
    -ldflags "-buildid= -s -w -X $VERSION_VAR=$version" \
    -o "$stage/$dir/$bin" ./cmd/$PLUGIN_NAME)
  chmod 0755 "$stage/$dir/$bin"
  tar --create --format=ustar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --mode='u=rwx,go=rx' -C "$stage/$dir" "$bin" | gzip -9 -n >"$stage/${PLUGIN_NAME}_${version}_${dir}.tar.gz"
done

(cd "$stage" && sha256 $(find . -type f ! -name 'SHA256SUMS*' | sed 's|^\./||' | LC_ALL=C sort)) >"$stage/SHA256SUMS.tmp"
mv "$stage/SHA256SUMS.tmp" "$stage/SHA256SUMS"

rm -rf "$out"
mv "$stage" "$out"
trap - EXIT
chmod 0755 "$out"
echo "wrote $out:" >&2
(cd "$out" && cat SHA256SUMS) >&2
