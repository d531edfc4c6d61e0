# Shell helpers shared by the demo scripts (sourced, not run). Each script defines
# its own die(), which wait_for calls.

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# mask TOKEN: a fingerprint that tells tokens apart without showing any of one
# (the first 12 hex digits of its SHA-256), never the token or a piece of it.
mask() { printf 'sha256:%s' "$(printf '%s' "$1" | sha256sum | cut -c1-12)"; }

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  die "timed out after ${secs}s waiting for $what"
}

step() { printf '\n==> %s\n' "$*"; }
