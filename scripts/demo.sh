#!/usr/bin/env bash
# The plugin end to end, in one command: a fake iAdvize upstream, a Vault dev
# server with the plugin, a role, and a burst of concurrent cold reads of
# creds/ that all get the same token for one login upstream.
#
# Usage: scripts/demo.sh [--keep]
#   (normally through `make demo`, or `make dev` for --keep)
# Environment:
#   VAULT_BIN       the vault binary (make: scripts/vault.sh)
#   PLUGIN_DIR      directory holding the plugin binary vault-plugin-secrets-iadvize
#   FAKE_BIN        the fake-iadvize binary (cmd/fake-iadvize)
#   BURST           concurrent readers in the demo (default 200)
#   DEV_ENV         with --keep: the file to write the exports to (make: build/dev.env)
#   PLUGIN_VERSION  with --keep: the version the plugin binary reports (make sets it)
#
# Without --keep (make demo), the demo runs and then both servers are stopped
# and the temporary directory removed (also when it fails or is interrupted).
# With --keep (make dev), it only starts the servers, with a user and a client in
# the fake, and leaves them running for the README's Quickstart: the plugin is
# registered (a dev server registers its plugin directory) but no mount is
# enabled. It writes DEV_ENV, which sets VAULT_ADDR, VAULT_TOKEN, PATH (with the
# built vault), FAKE_URL, DEMO_PASSWORD_FILE, DEMO_CLIENT_SECRET_FILE,
# PLUGIN_VERSION and DEV_STOP (the script that stops both servers); a previous
# `make dev` named in DEV_ENV is stopped first.
# Everything listens on 127.0.0.1 only. Passwords are random, given to the fake
# and to Vault in files or on standard input (never on a command line) and never
# printed; tokens are shown masked.
set -euo pipefail

PLUGIN_NAME=vault-plugin-secrets-iadvize
ROLE=demo
DEMO_USER=demo-user
DEMO_CLIENT=demo-client
BURST=${BURST:-200}

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
if [ "$keep" = 1 ]; then
  [ -n "${DEV_ENV:-}" ] || die "DEV_ENV must name the file to write the exports to (run: make dev)"
  [ -n "${PLUGIN_VERSION:-}" ] || die "PLUGIN_VERSION must be the plugin's version (run: make dev)"
  # A previous make dev still running: stop it, it would be lost otherwise.
  if [ -f "$DEV_ENV" ]; then
    old_stop=$(sed -n "s/^export DEV_STOP='\(.*\)'$/\1/p" "$DEV_ENV")
    if [ -n "$old_stop" ] && [ -x "$old_stop" ]; then
      echo "==> Stopping the servers of the previous make dev ($old_stop)"
      "$old_stop" || true
    fi
    rm -f "$DEV_ENV"
  fi
fi
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
# The secrets live in files of the private work directory, with no newline
# (vault write key=@FILE sends a file as is).
(umask 077 && random_hex 16 >"$work/demo-password" && random_hex 16 >"$work/demo-client-secret")
printf '{"username":"%s","password":"%s"}' "$DEMO_USER" "$(cat "$work/demo-password")" |
  curl -fsS -o /dev/null -H 'Content-Type: application/json' --data-binary @- "$FAKE_URL/_fake/users" ||
  die "could not add the demo user to the fake"
printf '{"client_id":"%s","client_secret":"%s"}' "$DEMO_CLIENT" "$(cat "$work/demo-client-secret")" |
  curl -fsS -o /dev/null -H 'Content-Type: application/json' --data-binary @- "$FAKE_URL/_fake/clients" ||
  die "could not add the demo client to the fake"
echo "    fake iAdvize on $FAKE_URL: service user '$DEMO_USER', client '$DEMO_CLIENT' (random secrets, not shown)"

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


# --- make dev: leave the servers for the README's Quickstart ----------------
if [ "$keep" = 1 ]; then
  vault plugin info -version="$PLUGIN_VERSION" secret "$PLUGIN_NAME" >/dev/null ||
    die "the dev server did not register $PLUGIN_NAME at version $PLUGIN_VERSION"
  cat >"$work/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the Vault and fake iAdvize of make dev and removes $work.
kill $vault_pid $fake_pid 2>/dev/null || true
for i in \$(seq 200); do kill -0 $vault_pid 2>/dev/null || kill -0 $fake_pid 2>/dev/null || break; sleep 0.1; done
rm -rf '$work'
rm -f '$DEV_ENV'
echo "make dev: servers stopped"
STOP
  chmod +x "$work/stop.sh"
  mkdir -p "$(dirname "$DEV_ENV")"
  cat >"$DEV_ENV.tmp" <<ENV
# Written by make dev (scripts/demo.sh --keep). In your shell: . $DEV_ENV
export VAULT_ADDR='$VAULT_ADDR'
export VAULT_TOKEN='$VAULT_TOKEN'
export PATH='$(dirname "$VAULT_BIN")':"\$PATH"
export FAKE_URL='$FAKE_URL'
export DEMO_PASSWORD_FILE='$work/demo-password'
export DEMO_CLIENT_SECRET_FILE='$work/demo-client-secret'
export PLUGIN_VERSION='$PLUGIN_VERSION'
export DEV_STOP='$work/stop.sh'
ENV
  mv "$DEV_ENV.tmp" "$DEV_ENV"
  step "Vault and the fake iAdvize keep running"
  echo "    Vault        $VAULT_ADDR  (pid $vault_pid, log $work/vault.log)"
  echo "                 $PLUGIN_NAME $PLUGIN_VERSION is registered; no mount is enabled yet"
  echo "    fake iAdvize $FAKE_URL  (pid $fake_pid, log $work/fake.log)"
  echo "                 user '$DEMO_USER' and client '$DEMO_CLIENT', secrets in $work"
  echo
  echo "    In your shell:   . $DEV_ENV"
  echo "    then follow the README's Quickstart. To stop both servers: \"\$DEV_STOP\""
  done_ok=1
  exit 0
fi

# --- make demo ----------------------------------------------------------------
step "vault secrets enable -path=iadvize $PLUGIN_NAME"
vault secrets enable -path=iadvize "$PLUGIN_NAME"

step "vault write iadvize/config token_url=$FAKE_URL/oauth2/token verify_url=$FAKE_URL/_authenticated"
vault write iadvize/config token_url="$FAKE_URL/oauth2/token" verify_url="$FAKE_URL/_authenticated"

step "vault write iadvize/roles/$ROLE username=$DEMO_USER password=@$work/demo-password"
vault write "iadvize/roles/$ROLE" username="$DEMO_USER" password=@"$work/demo-password"

# --- the burst ---------------------------------------------------------------
step "$BURST clients read iadvize/creds/$ROLE at the same time (cold: the plugin has no token yet)"
(umask 077 && printf 'X-Vault-Token: %s\n' "$VAULT_TOKEN" >"$work/token-header") # not on curl's command line
mkdir "$work/burst"
# now_ms: milliseconds since the epoch (bash 5), or whole seconds' worth (older bash).
now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then
    echo $((${EPOCHREALTIME//[.,]/} / 1000))
  else
    echo $(($(date +%s) * 1000))
  fi
}
started=$(now_ms)
readers=()
for ((i = 0; i < BURST; i++)); do
  curl -sS -o "$work/burst/$i.json" -w '%{http_code}' -H @"$work/token-header" \
    "$VAULT_ADDR/v1/iadvize/creds/$ROLE" >"$work/burst/$i.code" 2>>"$work/burst/errors" &
  readers+=($!)
done
wait "${readers[@]}" || true # the servers are background jobs too: wait for the readers only
elapsed_ms=$(($(now_ms) - started))
ok=$(cat "$work"/burst/*.code | grep -o 200 | wc -l | tr -d ' ')
distinct=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' "$work"/burst/*.json | sort -u)
ndistinct=$(grep -c . <<<"$distinct" || true)
echo "    $ok of $BURST answered HTTP 200 within ${elapsed_ms} ms, with $ndistinct distinct token(s): $(mask "$distinct")"
[ "$ok" = "$BURST" ] || die "$((BURST - ok)) reads failed ($(sort -u "$work/burst/errors" | head -3))"
[ "$ndistinct" = 1 ] || die "the readers got $ndistinct different tokens, want one"
token_1=$distinct
unset distinct

# read_creds: reads creds/ with the CLI, shows the answer with the token masked,
# and sets token_2.
read_creds() {
  local out tok
  out=$(vault read "iadvize/creds/$ROLE")
  tok=$(awk '$1 == "access_token" {print $2}' <<<"$out")
  [ -n "$tok" ] || die "creds/$ROLE returned no access_token"
  awk -v m="$(mask "$tok")" '$1 == "access_token" {print "    access_token       " m; next} {print "    " $0}' <<<"$out"
  token_2=$tok
}
step "vault read iadvize/creds/$ROLE   (one more read, with the CLI: served from the cache)"
read_creds

stats=$(curl -fsS "$FAKE_URL/_fake/stats") || die "could not read the fake's stats"
logins=$(sed -n 's/.*"login_attempts":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$stats")

step "Result"
[ "$token_1" = "$token_2" ] || die "the CLI read returned another token ($(mask "$token_2"), not $(mask "$token_1"))"
echo "    $((BURST + 1)) reads, one token ($(mask "$token_1")), and the fake iAdvize saw $logins login(s)"
echo "    (GET $FAKE_URL/_fake/stats: login_attempts=$logins)."
[ "$logins" = 1 ] || die "expected exactly one login upstream, the fake saw ${logins:-?}"
unset token_1 token_2

step "Next: make dev leaves a Vault and the fake running for the README's Quickstart."
echo
echo "Stopping the servers and removing $work."
done_ok=1
