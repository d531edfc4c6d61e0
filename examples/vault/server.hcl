# A minimal Vault server for the plugin: file storage, one listener, and the
# plugin directory the README's Install extracts the release archive into.
#
#   sudo install -d -m 0700 -o vault /opt/vault/data
#   sudo install -d -m 0755 /etc/vault/plugins    # root-owned: only root may add plugins
#   vault server -config=/etc/vault/server.hcl    # or the systemd unit of your package
#
# Vault reads plugin_directory only when it starts: after setting or changing
# it on a running server, restart Vault (`sudo systemctl restart vault`) and
# unseal it. New releases go into the same directory without a restart.
# e2e/upgrade_test.go runs the README's Install, Upgrade and Downgrade on a
# Vault started from this file (its paths and address moved to the test's).

storage "file" {
  path = "/opt/vault/data"
}

# Loopback without TLS, as in this README's examples. To serve other hosts,
# listen on their interface with tls_cert_file and tls_key_file instead of
# tls_disable, and make api_addr https.
listener "tcp" {
  address     = "127.0.0.1:8200"
  tls_disable = true
}

# The address clients (and the vault CLI, VAULT_ADDR) reach this server at.
api_addr = "http://127.0.0.1:8200"

# Where `vault plugin register -command=...` finds plugin binaries: an absolute
# path with no symbolic link in it (Vault refuses a plugin whose real path lies
# elsewhere).
plugin_directory = "/etc/vault/plugins"

# mlock keeps secrets out of swap but needs the IPC_LOCK capability
# (setcap cap_ipc_lock=+ep "$(readlink -f "$(command -v vault)")"); without
# it, disable it here, on a host whose swap is off or encrypted.
disable_mlock = true
