// Command vault-plugin-secrets-iadvize is the plugin binary Vault runs. It serves
// every mount of the plugin from one process (plugin.ServeMultiplex).
package main

import (
	"os"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	iadvize "github.com/iadvize/vault-plugin-secrets-iadvize"
)

func main() {
	apiClientMeta := &api.PluginAPIClientMeta{}
	flags := apiClientMeta.FlagSet()
	if err := flags.Parse(os.Args[1:]); err != nil {
		fatal(err)
	}
	tlsConfig := apiClientMeta.GetTLSConfig()
	tlsProviderFunc := api.VaultPluginTLSProvider(tlsConfig)

	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		// One set of login budgets for every mount this process serves: upstream
		// counts logins per source IP, and all mounts share this node's IP.
		BackendFactoryFunc: iadvize.FactoryWith(iadvize.NewBudgets()),
		TLSProviderFunc:    tlsProviderFunc,
	}); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
	os.Exit(1)
}
