# Policy of the operators of the iadvize/ mount: manage its config and roles,
# rotate a role's token, check its health (status/, verify/). It grants no read
# of creds/ or static-creds/: operators never need the tokens themselves.
# Moving config token_url or verify_url to another host collects no secret
# either: what it can and cannot reach is in docs/security.md.
#
#   vault policy write iadvize-operator examples/policies/iadvize-operator.hcl

path "iadvize/config" {
  capabilities = ["create", "read", "update", "delete"]
}

# A role write is a create when the role is new and an update otherwise:
# both are needed. "roles/*" also covers the list of roles (LIST iadvize/roles/).
path "iadvize/roles/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "iadvize/rotate-role/*" {
  capabilities = ["update"]
}

path "iadvize/status/*" {
  capabilities = ["read"]
}

path "iadvize/verify/*" {
  capabilities = ["read"]
}
