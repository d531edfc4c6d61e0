#!/usr/bin/env bash
# The plugin end to end, in one command: a fake iAdvize upstream, a Vault dev
# server with the plugin, a role, two reads of creds/ that return the same token
# for one login upstream.
#
# Usage: scripts/demo.sh [--keep]
#   (normally through `make demo`, or `make dev` for --keep)
# Environment:
#   VAULT_BIN   the vault binary (make: scripts/vault.sh)
#   PLUGIN_DIR  directory holding the plugin binary vault-plugin-secrets-iadvize
#   FAKE_BIN    the fake-iadvize binary (cmd/fake-iadvize)
#
# Without --keep, both servers are stopped and the temporary directory removed
# when the demo ends, fails or is interrupted. With --keep, they stay up after a
# successful run; the script prints the exports to use them and how to stop them.
# Everything listens on 127.0.0.1 only. The demo user's password is random, given
# to the fake and to Vault on standard input (never on a command line) and never
# printed; tokens are shown masked.
set -euo pipefail

PLUGIN_NAME=vault-plugin-secrets-iadvize
ROLE=demo
DEMO_USER=demo-user

keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

die() {
  echo "demo: $*" >&2
  exit 1
}

[ -n "${VAULT_BIN:-}" ] && [ -x "$VAULT_BIN" ] || die "VAULT_BIN must be the vault binary (run: make demo)"
[ -n "${PLUGIN_DIR:-}" ] && [ -x "$PLUGIN_DIR/$PLUGIN_NAME" ] || die "PLUGIN_DIR must hold the plugin binary $PLUGIN_NAME (run: make demo)"
[ -n "${FAKE_BIN:-}" ] && [ -x "$FAKE_BIN" ] || die "FAKE_BIN must be the fake-iadvize binary (run: make demo)"
command -v curl >/dev/null || die "curl is needed"
PLUGIN_DIR=$(cd "$PLUGIN_DIR" && pwd) # vault wants an absolute plugin directory

work=$(mktemp -d "${TMPDIR:-/tmp}/iadvize-demo.XXXXXX")
chmod 700 "$work"
fake_pid=""
vault_pid=""
done_ok=0

# stop_pid PID: SIGTERM, then SIGKILL if it is still there after 20 s.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$keep" = 1 ] && [ "$done_ok" = 1 ]; then
    exit "$rc"
  fi
  if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ] && [ "$done_ok" = 0 ]; then
    for f in fake.log vault.log; do
      if [ -s "$work/$f" ]; then
        echo "--- last lines of $f ---" >&2
        tail -n 20 "$work/$f" >&2
      fi
    done
  fi
  stop_pid "$vault_pid"
  stop_pid "$fake_pid"
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

# detached CMD... &: runs CMD in a session of its own, so that a Ctrl-C in the
# terminal reaches this script (whose trap stops the servers) and not the servers
# directly, and so that with --keep they outlive the terminal. Only for use with
# & (it execs, so that $! is the server's own pid).
detached() {
  if command -v setsid >/dev/null; then
    exec setsid "$@"
  fi
  exec "$@"
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- the fake iAdvize upstream ---------------------------------------------
step "Starting the fake iAdvize upstream"
detached "$FAKE_BIN" -listen 127.0.0.1:0 -addr-file "$work/fake.addr" </dev/null >"$work/fake.log" 2>&1 &
fake_pid=$!
wait_for 30 "the fake to listen" test -s "$work/fake.addr"
FAKE_URL=$(cat "$work/fake.addr")
password=$(random_hex 16)
printf '{"username":"%s","password":"%s"}' "$DEMO_USER" "$password" |
  curl -fsS -o /dev/null -H 'Content-Type: application/json' --data-binary @- "$FAKE_URL/_fake/users" ||
  die "could not add the demo user to the fake"
echo "    fake iAdvize on $FAKE_URL, service user '$DEMO_USER' (random password, not shown)"

# --- Vault dev server with the plugin --------------------------------------
step "Starting a Vault dev server with the plugin"
VAULT_TOKEN="demo-$(random_hex 12)"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
vault_up() { curl -fsS -o /dev/null "$VAULT_ADDR/v1/sys/health" 2>/dev/null; }
for attempt in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 30000))
  port_free "$port" || continue
  VAULT_ADDR="http://127.0.0.1:$port"
  detached "$VAULT_BIN" server -dev -dev-root-token-id="$VAULT_TOKEN" -dev-listen-address="127.0.0.1:$port" \
    -dev-plugin-dir="$PLUGIN_DIR" -dev-no-store-token </dev/null >"$work/vault.log" 2>&1 &
  vault_pid=$!
  for ((i = 0; i < 600; i++)); do
    vault_up && break
    kill -0 "$vault_pid" 2>/dev/null || break
    sleep 0.1
  done
  vault_up && break
  stop_pid "$vault_pid"
  vault_pid=""
  # Lost the port to another process: try another one. Anything else is fatal.
  grep -q "address already in use" "$work/vault.log" || die "Vault did not start (the end of its log follows)"
done
[ -n "$vault_pid" ] || die "Vault did not start: no free port found"
export VAULT_ADDR VAULT_TOKEN
unset VAULT_NAMESPACE VAULT_FORMAT
vault() { HOME="$work" "$VAULT_BIN" "$@"; }
echo "    $("$VAULT_BIN" version | awk '{sub(/,$/, "", $2); print $1, $2}') dev server on $VAULT_ADDR"

step "vault secrets enable -path=iadvize $PLUGIN_NAME"
vault secrets enable -path=iadvize "$PLUGIN_NAME"

step "vault write iadvize/config token_url=$FAKE_URL/oauth2/token verify_url=$FAKE_URL/_authenticated"
vault write iadvize/config token_url="$FAKE_URL/oauth2/token" verify_url="$FAKE_URL/_authenticated"

step "vault write iadvize/roles/$ROLE username=$DEMO_USER password=-   (password on stdin)"
printf '%s' "$password" | vault write "iadvize/roles/$ROLE" username="$DEMO_USER" password=-
unset password

# read_creds N: reads creds/ with the CLI, shows the answer with the token
# masked, and sets token_N.
read_creds() {
  local out tok
  out=$(vault read "iadvize/creds/$ROLE")
  tok=$(awk '$1 == "access_token" {print $2}' <<<"$out")
  [ -n "$tok" ] || die "creds/$ROLE returned no access_token"
  awk -v m="$(mask "$tok")" '$1 == "access_token" {print "    access_token       " m; next} {print "    " $0}' <<<"$out"
  printf -v "token_$1" '%s' "$tok"
}

step "vault read iadvize/creds/$ROLE   (first read: the plugin logs in)"
read_creds 1
step "vault read iadvize/creds/$ROLE   (second read: served from the cache)"
read_creds 2

stats=$(curl -fsS "$FAKE_URL/_fake/stats") || die "could not read the fake's stats"
logins=$(sed -n 's/.*"login_attempts":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$stats")

step "Result"
if [ "$token_1" = "$token_2" ]; then
  echo "    Both reads returned the same token ($(mask "$token_1")): same token, one login."
else
  die "the two reads returned different tokens ($(mask "$token_1") and $(mask "$token_2"))"
fi
echo "    The fake iAdvize saw $logins login(s) (GET $FAKE_URL/_fake/stats: login_attempts=$logins)."
[ "$logins" = 1 ] || die "expected exactly one login upstream, the fake saw ${logins:-?}"
unset token_1 token_2

try_next() {
  cat <<EOF
    vault read iadvize/status/$ROLE           # token times, next login, last outcome (no token shown)
    vault read iadvize/static-creds/$ROLE     # the same token without a lease, with ttl and rotation_period
    vault write -f iadvize/rotate-role/$ROLE  # log in now and replace the cached token
    vault read iadvize/verify/$ROLE           # check the cached token upstream (at most once per 5 s)
    curl -s $FAKE_URL/_fake/stats   # what the fake upstream saw
EOF
}

if [ "$keep" = 1 ]; then
  cat >"$work/stop.sh" <<EOF
#!/usr/bin/env bash
# Stops the demo's Vault and fake iAdvize and removes $work.
kill $vault_pid $fake_pid 2>/dev/null || true
for i in \$(seq 200); do kill -0 $vault_pid 2>/dev/null || kill -0 $fake_pid 2>/dev/null || break; sleep 0.1; done
rm -rf '$work'
echo "demo servers stopped"
EOF
  chmod +x "$work/stop.sh"
  step "The servers keep running. In your shell:"
  cat <<EOF
    export VAULT_ADDR=$VAULT_ADDR
    export VAULT_TOKEN=$VAULT_TOKEN
    export PATH="$(dirname "$VAULT_BIN"):\$PATH"
EOF
  echo
  echo "    Then try:"
  try_next
  echo
  echo "    Logs: $work/vault.log and $work/fake.log"
  echo "    To stop both servers (pids $vault_pid and $fake_pid) and remove $work:"
  echo "    $work/stop.sh"
else
  step "Try next (run 'make dev' to keep the servers up, then):"
  try_next
  echo
  echo "Stopping the servers and removing $work."
fi
done_ok=1
