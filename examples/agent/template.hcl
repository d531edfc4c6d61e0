# Vault Agent keeping crm-sync's iAdvize token in a file, rewritten right after
# each rotation.
#
# static-creds/ creates no lease and tells Agent when the token changes (its
# "ttl"): Agent sleeps exactly that long and re-reads, so the file follows each
# rotation within seconds and Agent never polls. token_file keeps this example
# self-contained; use your platform's auth method (approle, kubernetes, ...).
#
# Setup, once, from the root of this repository (the paths below are relative
# to it), with VAULT_ADDR set and VAULT_TOKEN an operator's token that may
# write policies and create periodic tokens (root, or sudo on auth/token/create):
#
#   vault policy write crm-sync examples/policies/crm-sync.hcl
#   install -d -m 0700 /run/crm-sync
#   vault token create -policy=crm-sync -period=24h -field=token >/run/crm-sync/vault-token
#
# The token holds the crm-sync policy (read crm-sync's token, report a refused
# one, nothing else) and Vault's default one, with which Agent looks the token
# up; Agent renews it, so a periodic token lives as long as Agent runs. Then,
# as the user that owns /run/crm-sync (the one the integration runs as):
#
#   VAULT_ADDR=https://vault.example.com:8200 vault agent -config=examples/agent/template.hcl
#
# e2e/agent_setup_test.go runs the setup lines as written, e2e/examples_test.go
# this file, each with /run/crm-sync moved to a temporary directory.

auto_auth {
  method "token_file" {
    config = {
      token_file_path = "/run/crm-sync/vault-token"
    }
  }
}

template {
  contents    = "{{ with secret \"iadvize/static-creds/crm-sync\" }}{{ .Data.access_token }}{{ end }}"
  destination = "/run/crm-sync/iadvize-token"
  perms       = "0600"
}
