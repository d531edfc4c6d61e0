# Vault Agent supervising crm-sync's worker: the worker runs with the iAdvize
# token in its environment (IADVIZE_TOKEN) and is restarted, once, with the new
# token after each rotation.
#
#   VAULT_ADDR=https://vault.example.com:8200 vault agent -config=examples/agent/exec.hcl
#
# static-creds/ creates no lease and tells Agent when the token changes (its
# "ttl"): Agent re-reads right then and restarts the worker only when the token
# did change. The Agent's token needs the crm-sync policy
# (examples/policies/crm-sync.hcl); token_file keeps this example self-contained.
# The worker (examples/worker) logs one line per start, with a fingerprint of
# its token, never the token.

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
