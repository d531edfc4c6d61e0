package vaulttest

import (
	"fmt"
	"path/filepath"
)

// StartFileStorage starts a server with `storage "file"` in a new temporary
// directory (dataDir), listening on 127.0.0.1:opts.Port (a free port when 0),
// with opts.PluginDir and opts.LogLevel. The server is neither initialised nor
// unsealed: call InitAndUnseal. It is stopped at cleanup.
func StartFileStorage(t TB, opts Options) (s *Server, dataDir string) {
	t.Helper()
	if opts.Port == 0 {
		opts.Port = FreePort(t)
	}
	if opts.PluginDir == "" {
		opts.PluginDir = PluginDir(t, PluginBin(t))
	}
	dataDir = filepath.Join(t.TempDir(), "data")
	addr := fmt.Sprintf("127.0.0.1:%d", opts.Port)
	opts.Dev, opts.ConfigHCL = false, fmt.Sprintf(`
storage "file" {
  path = %q
}
listener "tcp" {
  address     = %q
  tls_disable = true
}
plugin_directory = %q
disable_mlock    = true
api_addr         = "http://%s"
`, dataDir, addr, opts.PluginDir, addr)
	return Start(t, opts), dataDir
}
