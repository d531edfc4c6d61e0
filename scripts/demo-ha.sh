#!/usr/bin/env bash
# The plugin in a Vault HA cluster: three Vault servers on integrated storage
# (raft) on 127.0.0.1, the plugin registered once with its sha256 and mounted at
# iadvize/, a role against a fake iAdvize upstream. It prints the addresses, the
# unseal key and root token of this throwaway cluster, and what to try (read
# creds through each node, kill the leader, bring it back). It keeps running
# until Ctrl-C, then stops every server and removes its temporary directory.
#
# Usage: scripts/demo-ha.sh [--check]
#   (normally through `make demo-ha`)
#   --check  do not wait for Ctrl-C: read through every node, kill -9 the active
#            node, check that a standby takes over with the same token and no new
#            login, restart and unseal the killed node, then clean up and exit.
# Environment:
#   VAULT_BIN   the vault binary (make: scripts/vault.sh)
#   PLUGIN_DIR  directory holding the plugin binary vault-plugin-secrets-iadvize
#   FAKE_BIN    the fake-iadvize binary (cmd/fake-iadvize)
#
# Everything listens on 127.0.0.1 only. The demo user's password is random, given
# to the fake and to Vault on standard input (never on a command line) and never
# printed; access tokens are shown masked. The unseal key and root token are
# printed: they open nothing but this cluster, which is deleted on exit.
set -euo pipefail

PLUGIN_NAME=vault-plugin-secrets-iadvize
ROLE=demo
DEMO_USER=demo-user
NODES=3

check=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo-ha.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

die() {
  echo "demo-ha: $*" >&2
  exit 1
}

[ -n "${VAULT_BIN:-}" ] && [ -x "$VAULT_BIN" ] || die "VAULT_BIN must be the vault binary (run: make demo-ha)"
[ -n "${PLUGIN_DIR:-}" ] && [ -x "$PLUGIN_DIR/$PLUGIN_NAME" ] || die "PLUGIN_DIR must hold the plugin binary $PLUGIN_NAME (run: make demo-ha)"
[ -n "${FAKE_BIN:-}" ] && [ -x "$FAKE_BIN" ] || die "FAKE_BIN must be the fake-iadvize binary (run: make demo-ha)"
command -v curl >/dev/null || die "curl is needed"
if command -v sha256sum >/dev/null; then
  sha256() { sha256sum "$1" | awk '{print $1}'; }
elif command -v shasum >/dev/null; then
  sha256() { shasum -a 256 "$1" | awk '{print $1}'; }
else
  die "sha256sum or shasum is needed"
fi
VAULT_BIN=$(cd "$(dirname "$VAULT_BIN")" && pwd)/$(basename "$VAULT_BIN")
PLUGIN_DIR=$(cd "$PLUGIN_DIR" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/iadvize-demo-ha.XXXXXX")
chmod 700 "$work"
fake_pid=""
done_ok=0

# Each server runs in a session of its own (setsid), so that a Ctrl-C in the
# terminal reaches this script, whose trap stops them, and so that a server and
# the plugin processes it starts form one process group: kill -9 of the group is
# a machine crash. Without setsid, signals go to the server's pid only.
if command -v setsid >/dev/null; then have_setsid=1; else have_setsid=0; fi
detached() {
  if [ "$have_setsid" = 1 ]; then
    exec setsid "$@"
  fi
  exec "$@"
}

# signal_server SIG PID: the server's process group when it has one.
signal_server() {
  if [ "$have_setsid" = 1 ]; then
    kill "-$1" -- "-$2" 2>/dev/null
  else
    kill "-$1" "$2" 2>/dev/null
  fi
}

# stop_server PID: SIGTERM, then SIGKILL if it is still there after 20 s.
stop_server() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  signal_server TERM "$pid" || return 0
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  signal_server KILL "$pid" || true
}

node_pid() { cat "$work/node$1/pid" 2>/dev/null || true; }

cleanup() {
  local rc=$? n
  trap - EXIT INT TERM
  if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ] && [ "$done_ok" = 0 ]; then
    for f in fake.log node1/vault.log node2/vault.log node3/vault.log; do
      if [ -s "$work/$f" ]; then
        echo "--- last lines of $f ---" >&2
        tail -n 15 "$work/$f" >&2
      fi
    done
  fi
  echo "demo-ha: stopping the servers and removing $work" >&2
  for ((n = 1; n <= NODES; n++)); do
    stop_server "$(node_pid "$n")"
  done
  if [ -n "$fake_pid" ]; then
    kill -TERM "$fake_pid" 2>/dev/null || true
    wait "$fake_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# json_str KEY: the first string value of KEY in the compact JSON on stdin.
json_str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1; }

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

fake_logins() {
  curl -fsS "$FAKE_URL/_fake/stats" | sed -n 's/.*"login_attempts":[[:space:]]*\([0-9]*\).*/\1/p'
}

# --- three Vault servers on raft --------------------------------------------
step "Writing the configuration of $NODES Vault servers (storage \"raft\", one plugin directory each)"
declare -a api_port cluster_port addr
used=" "
pick_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    case "$used" in *" $p "*) continue ;; esac
    port_free "$p" || continue
    echo "$p"
    return
  done
}
for ((n = 1; n <= NODES; n++)); do
  api_port[n]=$(pick_port)
  used+="${api_port[n]} "
  cluster_port[n]=$(pick_port)
  used+="${cluster_port[n]} "
  addr[n]="http://127.0.0.1:${api_port[n]}"
done
for ((n = 1; n <= NODES; n++)); do
  d="$work/node$n"
  mkdir -p "$d/raft" "$d/plugins"
  # Every node has its own copy of the same binary, as separate machines would.
  cp "$PLUGIN_DIR/$PLUGIN_NAME" "$d/plugins/$PLUGIN_NAME"
  chmod 755 "$d/plugins/$PLUGIN_NAME"
  {
    echo "ui = false"
    echo "disable_mlock = true"
    echo "api_addr = \"${addr[n]}\""
    echo "cluster_addr = \"https://127.0.0.1:${cluster_port[n]}\""
    echo "plugin_directory = \"$d/plugins\""
    echo "storage \"raft\" {"
    echo "  path = \"$d/raft\""
    echo "  node_id = \"node$n\""
    echo "  performance_multiplier = 1"
    if [ "$n" != 1 ]; then
      echo "  retry_join {"
      echo "    leader_api_addr = \"${addr[1]}\""
      echo "  }"
    fi
    echo "}"
    echo "listener \"tcp\" {"
    echo "  address = \"127.0.0.1:${api_port[n]}\""
    echo "  cluster_address = \"127.0.0.1:${cluster_port[n]}\""
    echo "  tls_disable = true"
    echo "}"
  } >"$d/config.hcl"
  echo "    node$n: API ${addr[n]}, cluster port ${cluster_port[n]}, config $d/config.hcl"
done

sum=$(sha256 "$work/node1/plugins/$PLUGIN_NAME")
for ((n = 2; n <= NODES; n++)); do
  [ "$(sha256 "$work/node$n/plugins/$PLUGIN_NAME")" = "$sum" ] || die "node$n's plugin binary differs"
done

# A script to (re)start one node, recording its pid for the cleanup; the demo
# uses it and so can you, after killing a node.
cat >"$work/start-node.sh" <<EOF
#!/usr/bin/env bash
# Usage: $work/start-node.sh N   starts node N (sealed: unseal it afterwards).
set -euo pipefail
n=\$1
d="$work/node\$n"
[ -f "\$d/config.hcl" ] || { echo "no node \$n" >&2; exit 2; }
if [ -s "\$d/pid" ] && kill -0 "\$(cat "\$d/pid")" 2>/dev/null; then
  echo "node\$n is running (pid \$(cat "\$d/pid"))" >&2; exit 1
fi
if command -v setsid >/dev/null; then run=(setsid); else run=(); fi
HOME="\$d" VAULT_ADDR= VAULT_TOKEN= "\${run[@]}" "$VAULT_BIN" server -config="\$d/config.hcl" </dev/null >>"\$d/vault.log" 2>&1 &
echo \$! >"\$d/pid"
echo "node\$n started, pid \$!"
EOF
chmod +x "$work/start-node.sh"

# answers N: node N answers HTTP (whatever its state).
answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' "${addr[$1]}/v1/sys/health")" != 000 ]; }
# health N: the node's state from sys/health status codes.
health() {
  case "$(curl -s -o /dev/null -w '%{http_code}' "${addr[$1]}/v1/sys/health")" in
    200) echo active ;; 429) echo standby ;; 503) echo sealed ;; 501) echo uninitialized ;;
    000) echo down ;; *) echo unknown ;;
  esac
}
is_active() { [ "$(health "$1")" = active ]; }
is_standby() { [ "$(health "$1")" = standby ]; }

start_node() {
  "$work/start-node.sh" "$1" >/dev/null
  wait_for 60 "node$1 to answer" answers "$1"
}

# unseal N: sends the unseal key (on stdin, never on a command line). A joining
# node refuses it until retry_join has reached the leader.
unseal() {
  printf '{"key":"%s"}' "$UNSEAL_KEY" |
    curl -fsS -o /dev/null -X PUT --data-binary @- "${addr[$1]}/v1/sys/unseal"
}

step "Starting node1, initialising it (one key share) and unsealing it"
start_node 1
init=$(curl -fsS -X PUT --data-binary '{"secret_shares":1,"secret_threshold":1}' "${addr[1]}/v1/sys/init") ||
  die "vault operator init failed"
UNSEAL_KEY=$(json_str keys_base64 <<<"${init//\[/}")
VAULT_TOKEN=$(json_str root_token <<<"$init")
unset init
[ -n "$UNSEAL_KEY" ] && [ -n "$VAULT_TOKEN" ] || die "could not read the unseal key and root token"
unseal 1
wait_for 90 "node1 to become active" is_active 1

export VAULT_TOKEN
unset VAULT_NAMESPACE VAULT_FORMAT
# vault N ARGS...: the CLI against node N.
vault() {
  local n=$1
  shift
  HOME="$work" VAULT_ADDR="${addr[n]}" "$VAULT_BIN" "$@"
}

step "Starting node2 and node3: they join node1 (retry_join) once unsealed"
for ((n = 2; n <= NODES; n++)); do start_node "$n"; done
for ((n = 2; n <= NODES; n++)); do wait_for 90 "node$n to accept the unseal key" unseal "$n"; done
for ((n = 2; n <= NODES; n++)); do wait_for 90 "node$n to join as a standby" is_standby "$n"; done

# healthy_voters: autopilot reports a healthy cluster of NODES voters.
healthy_voters() {
  local st voters
  st=$(curl -fsS -H "X-Vault-Token: $VAULT_TOKEN" "${addr[1]}/v1/sys/storage/raft/autopilot/state") || return 1
  grep -q '"healthy":true' <<<"$st" || return 1
  voters=$(sed -n 's/.*"voters":\[\([^]]*\)\].*/\1/p' <<<"$st" | tr ',' '\n' | grep -c node)
  [ "$voters" = "$NODES" ]
}
step "Waiting for autopilot to report $NODES healthy voters (new servers must be stable ~10 s first)"
wait_for 180 "$NODES healthy voters" healthy_voters
vault 1 operator raft list-peers | sed 's/^/    /'

step "vault plugin register -sha256=$sum secret $PLUGIN_NAME   (once, for the whole cluster)"
vault 1 plugin register -sha256="$sum" secret "$PLUGIN_NAME"
step "vault secrets enable -path=iadvize $PLUGIN_NAME"
vault 1 secrets enable -path=iadvize "$PLUGIN_NAME"
step "vault write iadvize/config token_url=$FAKE_URL/oauth2/token verify_url=$FAKE_URL/_authenticated"
vault 1 write iadvize/config token_url="$FAKE_URL/oauth2/token" verify_url="$FAKE_URL/_authenticated"
step "vault write iadvize/roles/$ROLE username=$DEMO_USER password=-   (password on stdin)"
printf '%s' "$password" | vault 1 write "iadvize/roles/$ROLE" username="$DEMO_USER" password=-
unset password

# read_token N: the access token read through node N (the CLI is pointed at that
# node; a standby forwards the read to the active node).
read_token() { vault "$1" read -field=access_token "iadvize/creds/$ROLE"; }

step "Reading iadvize/creds/$ROLE through every node"
first=""
for ((n = 1; n <= NODES; n++)); do
  tok=$(read_token "$n") || die "reading creds through node$n failed"
  echo "    node$n ($(health "$n")): access_token $(mask "$tok")"
  [ -z "$first" ] || [ "$tok" = "$first" ] || die "node$n served another token"
  first=$tok
done
logins=$(fake_logins)
echo "    Same token through every node; the fake iAdvize saw $logins login(s)."
[ "$logins" = 1 ] || die "expected exactly one login upstream, the fake saw ${logins:-?}"

active_node() {
  local n
  for ((n = 1; n <= NODES; n++)); do
    if is_active "$n"; then
      echo "$n"
      return 0
    fi
  done
  return 1
}

if [ "$check" = 1 ]; then
  old=$(active_node) || die "no active node"
  step "kill -9 of node$old (the active node) and its plugin"
  signal_server KILL "$(node_pid "$old")"
  new_active() { local a; a=$(active_node) && [ "$a" != "$old" ]; }
  wait_for 120 "a standby to take over" new_active
  new=$(active_node)
  echo "    node$new is active"
  for ((n = 1; n <= NODES; n++)); do
    [ "$n" = "$old" ] && continue
    wait_for 60 "node$n to serve" read_token "$n"
    [ "$(read_token "$n")" = "$first" ] || die "node$n serves another token after the failover"
    echo "    node$n ($(health "$n")): same token $(mask "$first")"
  done
  step "Restarting node$old: it comes back sealed; unsealing it"
  start_node "$old"
  wait_for 60 "node$old to accept the unseal key" unseal "$old"
  wait_for 90 "node$old to rejoin as a standby" is_standby "$old"
  wait_for 180 "$NODES healthy voters" healthy_voters
  [ "$(read_token "$old")" = "$first" ] || die "node$old serves another token after rejoining"
  logins=$(fake_logins)
  echo "    node$old ($(health "$old")): same token; the fake saw $logins login(s) in all."
  [ "$logins" = 1 ] || die "expected one login upstream, the fake saw ${logins:-?}"
  unset first tok
  done_ok=1
  step "Check passed"
  exit 0
fi
unset first tok

a=$(active_node) || die "no active node"
if [ "$have_setsid" = 1 ]; then
  kill_cmd="kill -9 -- -$(node_pid "$a")"
else
  kill_cmd="kill -9 $(node_pid "$a")"
fi
step "The cluster is up. This is a throwaway cluster: its secrets are"
echo "    unseal key:  $UNSEAL_KEY"
echo "    root token:  $VAULT_TOKEN"
echo
for ((n = 1; n <= NODES; n++)); do
  echo "    node$n  ${addr[n]}  pid $(node_pid "$n")  $(health "$n")  log $work/node$n/vault.log"
done
echo "    fake iAdvize  $FAKE_URL  (logins so far: curl -s $FAKE_URL/_fake/stats)"

cat <<EOF

==> In another shell:
    export VAULT_TOKEN=$VAULT_TOKEN PATH="$(dirname "$VAULT_BIN"):\$PATH"

    # The same token through every node (standbys forward to the active node):
    VAULT_ADDR=${addr[1]} vault read iadvize/creds/$ROLE
    VAULT_ADDR=${addr[2]} vault read iadvize/creds/$ROLE
    VAULT_ADDR=${addr[3]} vault read iadvize/creds/$ROLE
    VAULT_ADDR=${addr[1]} vault operator raft list-peers
    curl -s $FAKE_URL/_fake/stats            # login_attempts stays at 1

    # Crash the active node (node$a) with its plugin, as a power cut would:
    $kill_cmd
    # Within seconds a standby takes over; read through the survivors: the same
    # token, no new login (the token is in raft storage, not in the dead node):
    VAULT_ADDR=${addr[$(((a % NODES) + 1))]} vault read iadvize/creds/$ROLE
    VAULT_ADDR=${addr[$(((a % NODES) + 1))]} vault read iadvize/status/$ROLE

    # Bring it back: a restarted node is sealed until it gets the unseal key:
    $work/start-node.sh $a
    VAULT_ADDR=${addr[$a]} vault operator unseal $UNSEAL_KEY
    VAULT_ADDR=${addr[$a]} vault operator raft autopilot state

==> Press Ctrl-C to stop the cluster and the fake, and remove $work.
EOF
done_ok=1
while :; do
  sleep 1
done
