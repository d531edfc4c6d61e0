# Sourced by the scripts that build a pinned tool from the Go module proxy
# (vault.sh, hydra.sh): the override variable, the cache outside the repository,
# the lock that makes parallel callers wait for one build, and the download of a
# module's go.mod. Nothing here is specific to one tool.

# tool_cache_prepare NAME VERSION OVERRIDE_VAR [--cached-only]
# Prints the binary and exits when $OVERRIDE_VAR is set or NAME at VERSION is
# cached; with --cached-only exits 1 instead of building. Otherwise it returns
# holding the build lock, with $bin (where to put the binary) and $work (a scratch
# directory removed on exit) set.
tool_cache_prepare() {
  local name=$1 version=$2 override_var=$3 mode=${4:-}
  local override=${!override_var:-}
  if [ -n "$override" ]; then
    [ -x "$override" ] || { echo "$override_var=$override is not an executable" >&2; exit 1; }
    echo "$override"
    exit 0
  fi
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-iadvize"
  bin="$root/$name-$version/$name"
  if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
  fi
  # --cached-only: report the cached binary, never build (tests use this).
  [ "$mode" = "--cached-only" ] && exit 1

  mkdir -p "$root" "$(dirname "$bin")"
  local lock="$root/$name-$version.lock"
  exec 9>"$lock"
  if ! flock -n 9; then
    echo "$name: another build of $name $version is running (lock $lock); waiting for it: several minutes..." >&2
    flock 9
  fi
  if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
}

# module_gomod MODULE@VERSION: downloads the module into the Go module cache and
# prints the path of its go.mod.
module_gomod() {
  local gomod
  gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$1" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$gomod" ] || { echo "could not download $1" >&2; return 1; }
  echo "$gomod"
}
