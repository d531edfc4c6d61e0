// Package ha holds the end-to-end tests of the plugin in a Vault HA cluster on
// integrated storage: three real Vault servers (storage "raft") on 127.0.0.1, the
// plugin registered once with its sha256 and mounted, against the fake iAdvize
// upstream. They show that standbys forward reads to the active node, that one
// login serves the whole cluster, and that a failover (kill -9 of the active node)
// neither loses the cached token nor doubles a login.
//
// The tests run with `make test`; they are skipped with -short and when no Vault
// binary is available (see package vaulttest). `make demo-ha` starts the same
// cluster for a person to try.
package ha
