package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

func TestSmokeRealVault(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	var logins atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logins.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "tok", "expires_in": 86400, "token_type": "Bearer"})
	}))
	defer up.Close()
	v := vaulttest.StartDev(t, vaulttest.Options{})
	c := v.Client.Logical()
	if _, err := c.Write("iadvize/config", map[string]any{"token_url": up.URL + "/oauth2/token"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write("iadvize/roles/app", map[string]any{"username": "u", "password": "p"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		s, err := c.Read("iadvize/creds/app")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("lease=%d renewable=%v warnings=%v", s.LeaseDuration, s.Renewable, s.Warnings)
	}
	if logins.Load() != 1 {
		t.Fatalf("logins=%d", logins.Load())
	}
	_, err := c.Write("iadvize/roles/bad", map[string]any{"username": "u", "pasword": "p"})
	t.Logf("typo: %v", err)
	_, err = c.Read("iadvize/creds/nope")
	t.Logf("unknown: %v", err)
	r, err := c.Read("sys/mounts/iadvize")
	if err == nil && r != nil {
		t.Logf("mount: %v", r.Data["running_plugin_version"])
	}
}
