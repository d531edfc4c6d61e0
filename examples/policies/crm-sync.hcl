# Policy of one integration, "crm-sync": read its own role's token, leased
# (creds/) or not (static-creds/), and nothing else. One such policy per
# integration, each naming its own role.
#
#   vault policy write crm-sync examples/policies/crm-sync.hcl

path "iadvize/creds/crm-sync" {
  capabilities = ["read"]
}

path "iadvize/static-creds/crm-sync" {
  capabilities = ["read"]
}
