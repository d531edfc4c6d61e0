# Vault Agent keeping crm-sync's iAdvize token in a file, rewritten right after
# each rotation.
#
#   VAULT_ADDR=https://vault.example.com:8200 vault agent -config=examples/agent/template.hcl
#
# static-creds/ creates no lease and tells Agent when the token changes (its
# "ttl"): Agent sleeps exactly that long and re-reads, so the file follows each
# rotation within seconds and Agent never polls. The Agent's token needs the
# crm-sync policy (examples/policies/crm-sync.hcl). token_file keeps this example
# self-contained; use your platform's auth method (approle, kubernetes, ...).

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
