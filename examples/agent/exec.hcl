# Vault Agent supervising crm-sync's worker: the worker runs with the iAdvize
# token in its environment (IADVIZE_TOKEN) and is restarted, once, with the new
# token after each rotation.
#
# static-creds/ creates no lease and tells Agent when the token changes (its
# "ttl"): Agent re-reads right then and restarts the worker only when the token
# did change. The worker (examples/worker) logs one line per start, with a
# fingerprint of its token, never the token. token_file keeps this example
# self-contained; use your platform's auth method (approle, kubernetes, ...).
#
# Setup, once, from the root of this repository (the paths below are relative
# to it), with VAULT_ADDR set and VAULT_TOKEN an operator's token that may
# write policies and create periodic tokens (root, or sudo on auth/token/create):
#
#   vault policy write crm-sync examples/policies/crm-sync.hcl
#   install -d -m 0700 /run/crm-sync
#   vault token create -policy=crm-sync -period=24h -field=token >/run/crm-sync/vault-token
#   install -d -m 0750 /var/log/crm-sync
#   go build -o /usr/local/bin/crm-sync-worker ./examples/worker
#
# The token holds the crm-sync policy (read crm-sync's token, report a refused
# one, nothing else) and Vault's default one, with which Agent looks the token
# up; Agent renews it, so a periodic token lives as long as Agent runs. Then,
# as the user that owns /run/crm-sync and /var/log/crm-sync (the one the worker
# runs as):
#
#   VAULT_ADDR=https://vault.example.com:8200 vault agent -config=examples/agent/exec.hcl
#
# e2e/agent_setup_test.go runs the setup lines as written, e2e/examples_test.go
# this file, each with the paths moved to a temporary directory.

auto_auth {
  method "token_file" {
    config = {
      token_file_path = "/run/crm-sync/vault-token"
    }
  }
}

env_template "IADVIZE_TOKEN" {
  contents             = "{{ with secret \"iadvize/static-creds/crm-sync\" }}{{ .Data.access_token }}{{ end }}"
  error_on_missing_key = true
}

exec {
  command                   = ["/usr/local/bin/crm-sync-worker"]
  restart_on_secret_changes = "always"
  restart_stop_signal       = "SIGTERM"
  child_process_stdout      = "/var/log/crm-sync/worker.log"
  child_process_stderr      = "/var/log/crm-sync/worker.log"
}
