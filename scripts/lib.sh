# Shell helpers shared by the demo scripts (sourced, not run). Each script defines
# its own die(), which wait_for calls.

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# mask TOKEN: the first 6 characters, then "...".
mask() { printf '%s...' "${1:0:6}"; }

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
