#!/usr/bin/env bash
# Builds the plugin's release: one archive per platform and SHA256SUMS, all of
# them reproducible (the same commit and Go toolchain give the same bytes).
#
# Usage: scripts/release.sh VERSION      (normally `make release VERSION=v0.2.0`)
#   VERSION   a semantic version with a leading v (v0.2.0, v1.0.0-rc.1). It is
#             stamped into the binary, which reports it to Vault: register it
#             with `vault plugin register -version=VERSION`. CHANGELOG.md must
#             have an entry for it (a heading "## [v0.2.0]", with or without
#             the v and the brackets, a date may follow): otherwise nothing is
#             built.
# Environment:
#   OUT_DIR         where to write (default build/release; make release
#                   RELEASE_DIR=...). Other versions' files there are kept,
#                   with their lines of SHA256SUMS; this version's files from
#                   an earlier run are replaced. To publish one version alone,
#                   give it a directory of its own.
#   PLATFORMS       os/arch pairs (default "linux/amd64 linux/arm64 darwin/amd64
#                   darwin/arm64"); PLATFORMS=linux/amd64 builds one
#   GO              the go command (default go)
#   CHANGELOG_FILE  the changelog checked for VERSION (default CHANGELOG.md of
#                   the source tree)
#
# Writes, for each platform (e.g. linux_amd64):
#   OUT_DIR/linux_amd64/vault-plugin-secrets-iadvize_VERSION         the binary
#   OUT_DIR/vault-plugin-secrets-iadvize_VERSION_linux_amd64.tar.gz  it, alone
# and OUT_DIR/SHA256SUMS, the sha256 of every binary and archive there, of
# every version (the binary's is the value `vault plugin register -sha256`
# wants; check a download with `sha256sum -c --ignore-missing SHA256SUMS`).
#
# Time, on 2 cores: 8 to 10 minutes for the four platforms with a cold Go
# build cache (every dependency compiled once per platform), about 30 seconds
# with a warm one; each platform is about a quarter of that.
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
out=${out%/}
platforms=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}
changelog=${CHANGELOG_FILE:-$root/CHANGELOG.md}

# The changelog must say what this version is before it is built.
[ -f "$changelog" ] || die "no $changelog: a release needs its changelog entry"
awk -v want="${version#v}" '
  $1 == "##" { v = $2; gsub(/^\[|\]$/, "", v); sub(/^v/, "", v); if (v == want) found = 1 }
  END { exit !found }' "$changelog" ||
  die "$changelog has no entry for $version: add a \"## [$version] - $(date +%F)\" section saying what" \
    "it changes (rename \"## [Unreleased]\" when that is this release), then run make release again"

tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is needed (on macOS: brew install gnu-tar, and put gtar first in PATH as tar)"
if command -v sha256sum >/dev/null; then
  sha256() { sha256sum "$@"; }
else
  sha256() { shasum -a 256 "$@"; }
fi

# Write into OUT_DIR only when it is empty, new or a previous release (it holds SHA256SUMS).
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/SHA256SUMS" ]; then
  die "OUT_DIR=$out is not empty and holds no SHA256SUMS: refusing to write into it"
fi
mkdir -p "$out"
tmp=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
stage=$tmp/stage sums=$tmp/sums keep=$tmp/keep
mkdir "$stage"

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
(cd "$stage" && sha256 $(find . -type f | sed 's|^\./||' | LC_ALL=C sort)) >"$sums"

# ours NAME: whether a file of OUT_DIR (as SHA256SUMS names it) is this version's.
ours() {
  case "$1" in
    "${PLUGIN_NAME}_${version}_"*.tar.gz | */"${PLUGIN_NAME}_${version}") return 0 ;;
    *) return 1 ;;
  esac
}

# Into OUT_DIR, one run at a time (where flock exists): this version's files
# of an earlier run go, the new ones come in, and SHA256SUMS keeps the lines of
# the other versions' files, sorted by name with this version's.
if command -v flock >/dev/null; then
  exec 8<"$out"
  flock 8
fi
: >"$keep"
if [ -f "$out/SHA256SUMS" ]; then
  while read -r sum name; do
    [ -n "$name" ] || continue
    ours "$name" || printf '%s  %s\n' "$sum" "$name" >>"$keep"
  done <"$out/SHA256SUMS"
fi
rm -f "$out/${PLUGIN_NAME}_${version}_"*.tar.gz "$out"/*/"${PLUGIN_NAME}_${version}"
rmdir "$out"/*/ 2>/dev/null || true # platform directories left empty
(cd "$stage" && find . -type f | sed 's|^\./||') | while read -r f; do
  mkdir -p "$(dirname "$out/$f")"
  mv "$stage/$f" "$out/$f"
done
cat "$keep" "$sums" | LC_ALL=C sort -b -k2,2 >"$out/SHA256SUMS.tmp"
mv "$out/SHA256SUMS.tmp" "$out/SHA256SUMS"
chmod 0755 "$out"
echo "wrote into $out:" >&2
cat "$sums" >&2
others=$(wc -l <"$keep")
[ "$others" -eq 0 ] || echo "(SHA256SUMS also lists $others file(s) of other versions, kept)" >&2
