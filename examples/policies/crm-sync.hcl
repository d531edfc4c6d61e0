# Policy of one integration, "crm-sync": read its own role's token, leased
# (creds/) or not (static-creds/), and report there a token the API refused
# (update with refused_token_sha256, answered with a working token: README,
# "When the API refuses the token"); nothing else. One such policy per
# integration, each naming its own role. A consumer that never reports (Vault
# Agent) needs only "read".
#
#   vault policy write crm-sync examples/policies/crm-sync.hcl

path "iadvize/creds/crm-sync" {
  capabilities = ["read", "update"]
}

path "iadvize/static-creds/crm-sync" {
  capabilities = ["read", "update"]
}
