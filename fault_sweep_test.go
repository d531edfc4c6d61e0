package iadvize

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// The storage fault sweep: for every request that writes storage, each storage
// operation it makes fails in turn, once. After each: the request failed with a
// 5xx or ended as it does with no fault; a retry ends as a first or a second try
// with no fault does; nothing stored is lost or half-written (no role without
// its secret, no token without its role, no index entry without its role); and
// no secret reached an error or a log line.

const sweepPassword = "pw-sweep-Xq7Rz2"

// sweepEnv is a mount over a sweepStorage, on the fake upstream, with role
// "app" (and, where the case needs it, its first token).
type sweepEnv struct {
	*testEnv
	s    *sweepStorage
	fake *upstream
	hash string // the hex SHA-256 of role app's first token, when loggedIn
}

type sweepCase struct {
	name string
	// config is written before the role ("verify_url": "" and the like).
	config map[string]any
	// loggedIn reads creds/app once before the request.
	loggedIn bool
	// prepare runs after the setup, before the request (fault modes, clock).
	prepare func(e *sweepEnv)
	// request is the request under test; it returns its response and error.
	request func(e *sweepEnv) (*logical.Response, error)
	// retried, when set, checks the answer of the retry.
	retried func(e *sweepEnv, resp *logical.Response)
}

func newSweepEnv(t *testing.T, c sweepCase) *sweepEnv {
	t.Helper()
	clock := fakeclock.New()
	fake := startFakeIAdvize(t, clock, fakeiadvize.Options{})
	fake.AddUser("svc@example.com", sweepPassword)
	fake.AddUser("new@example.com", sweepPassword+"-new")
	s := &sweepStorage{Storage: &logical.InmemStorage{}}
	e := &sweepEnv{testEnv: newTestEnv(t, s, clock), s: s, fake: fake}
	e.configure(fake, c.config)
	e.addRole("app", "svc@example.com", sweepPassword)
	if c.loggedIn {
		e.hash = tokenSHA256(accessToken(t, e.mustRead("creds/app")))
	}
	if c.prepare != nil {
		c.prepare(e)
	}
	return e
}

func reportCached(e *sweepEnv) (*logical.Response, error) {
	return e.report("creds/app", e.hash)
}

// servedAnotherToken checks that a retried report got a token other than the
// one reported.
func servedAnotherToken(e *sweepEnv, resp *logical.Response) {
	e.t.Helper()
	if tokenSHA256(accessToken(e.t, resp)) == e.hash {
		e.t.Fatal("the retried report was served the token it reported")
	}
}

// vaultWrite writes as Vault does: an existence check, whose error is the
// answer (a 500), then a create or an update.
func (e *sweepEnv) vaultWrite(path string, data map[string]any) (*logical.Response, error) {
	req := &logical.Request{Operation: logical.UpdateOperation, Path: path, Data: data, Storage: e.storage}
	_, exists, err := e.b.HandleExistenceCheck(e.t.Context(), req)
	if err != nil {
		return nil, err
	}
	if !exists {
		req.Operation = logical.CreateOperation
	}
	return e.b.HandleRequest(e.t.Context(), req)
}

func TestStorageFaultSweep(t *testing.T) {
	cases := []sweepCase{
		{name: "config write", request: func(e *sweepEnv) (*logical.Response, error) {
			return e.vaultWrite("config", map[string]any{"refresh_before": "2h", "token_url": e.fake.tokenURL() + "?v=2"})
		}},
		{name: "config delete", request: func(e *sweepEnv) (*logical.Response, error) {
			return e.do(logical.DeleteOperation, "config", nil)
		}},
		{name: "role create", request: func(e *sweepEnv) (*logical.Response, error) {
			return e.vaultWrite("roles/second", map[string]any{"username": "new@example.com", "password": sweepPassword + "-new"})
		}},
		{name: "role credentials rewrite", loggedIn: true, request: func(e *sweepEnv) (*logical.Response, error) {
			return e.vaultWrite("roles/app", map[string]any{"username": "new@example.com", "password": sweepPassword + "-new"})
		}},
		{name: "role ttl update", loggedIn: true, request: func(e *sweepEnv) (*logical.Response, error) {
			return e.vaultWrite("roles/app", map[string]any{"ttl": "1h"})
		}},
		{name: "role delete", loggedIn: true, request: func(e *sweepEnv) (*logical.Response, error) {
			return e.do(logical.DeleteOperation, "roles/app", nil)
		}},
		{name: "a login's bookkeeping: token", request: func(e *sweepEnv) (*logical.Response, error) {
			return e.read("creds/app")
		}},
		{name: "a login's bookkeeping: failure", prepare: func(e *sweepEnv) {
			e.fake.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultServerError})
		}, request: func(e *sweepEnv) (*logical.Response, error) {
			return e.read("creds/app")
		}},
		{name: "budgets: upstream 429", prepare: func(e *sweepEnv) {
			e.fake.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultRateLimit, RetryAfter: 120})
		}, request: func(e *sweepEnv) (*logical.Response, error) {
			return e.read("static-creds/app")
		}},
		{name: "detached refresh", loggedIn: true, prepare: func(e *sweepEnv) {
			e.clock.Advance(23*time.Hour + time.Minute)
		}, request: func(e *sweepEnv) (*logical.Response, error) {
			resp, err := e.read("creds/app")
			e.settle()
			return resp, err
		}},
		{name: "rotate-role", loggedIn: true, request: func(e *sweepEnv) (*logical.Response, error) {
			return e.doRotate("app")
		}},
		{name: "refused report, verify_url says invalid", loggedIn: true, prepare: func(e *sweepEnv) {
			e.fake.RevokeAll()
		}, request: reportCached, retried: servedAnotherToken},
		{name: "refused report, no verify_url", config: map[string]any{"verify_url": ""}, loggedIn: true,
			request: reportCached, retried: servedAnotherToken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			first, second := baseline(t, c)
			for n := 1; ; n++ {
				e := newSweepEnv(t, c)
				e.s.failOp(n)
				resp, err := c.request(e)
				if !e.s.failed() {
					if n == 1 {
						t.Fatal("the request made no storage operation")
					}
					t.Logf("%d storage operations, each failed once", n-1)
					break
				}
				what := fmt.Sprintf("storage operation %d failed", n)
				if got := outcome(resp, err); got != first && !strings.HasPrefix(got, "5") {
					t.Fatalf("%s: the request ended %s, want %s (as with no fault) or a 5xx", what, got, first)
				}
				e.settle()
				retry, retryErr := c.request(e)
				if got := outcome(retry, retryErr); got != first && got != second {
					t.Fatalf("%s: the retry ended %s, want %s or %s (a first or second try with no fault)", what, got, first, second)
				}
				if c.retried != nil {
					c.retried(e, retry)
				}
				e.settle()
				e.checkStored(what)
				e.checkNoSecretSeen(what, resp, err)
			}
		})
	}
}

// baseline is how the case's request ends with no fault, on a first and on a
// second try.
func baseline(t *testing.T, c sweepCase) (first, second string) {
	t.Helper()
	e := newSweepEnv(t, c)
	first = outcome(c.request(e))
	e.settle()
	second = outcome(c.request(e))
	e.settle()
	return first, second
}

// outcome names how a request ended: "ok", or its HTTP status.
func outcome(resp *logical.Response, err error) string {
	switch {
	case err != nil && codedStatus(err) != 0:
		return fmt.Sprint(codedStatus(err))
	case err == logical.ErrReadOnly:
		return "read-only"
	case err != nil:
		return "500"
	case resp != nil && resp.IsError():
		return "400"
	}
	return "ok"
}

// checkStored fails the test when storage holds a role without its secret or its
// credentials, a token state without its role, or an index entry without its
// role.
func (e *sweepEnv) checkStored(what string) {
	e.t.Helper()
	roles := map[string]*role{}
	for _, key := range storageKeys(e.t, e.storage, rolesStoragePrefix) {
		r := storedRole(e.t, e.storage, strings.TrimPrefix(key, rolesStoragePrefix))
		secret := r.Password
		if r.GrantType == grantClientCredentials {
			secret = r.ClientSecret
		}
		if secret == "" || r.credentialsID() == "" {
			e.t.Fatalf("%s: %s is stored without its secret or credentials ID", what, key)
		}
		roles[strings.TrimPrefix(key, rolesStoragePrefix)] = r
	}
	if _, ok := roles["app"]; !ok && !strings.Contains(e.t.Name(), "delete") {
		e.t.Fatalf("%s: role app was lost", what)
	}
	for _, key := range storageKeys(e.t, e.storage, tokensStoragePrefix) {
		if roles[strings.TrimPrefix(key, tokensStoragePrefix)] == nil {
			e.t.Fatalf("%s: %s is stored without its role", what, key)
		}
	}
	for _, key := range storageKeys(e.t, e.storage, principalsStoragePrefix) {
		parts := strings.Split(strings.TrimPrefix(key, principalsStoragePrefix), "/")
		r := roles[parts[1]]
		if r == nil || principalHash(r.principal()) != parts[0] {
			e.t.Fatalf("%s: index entry %s is stored without its role", what, key)
		}
	}
	if entry, err := e.storage.Get(e.t.Context(), recentBudgetKey); err != nil || (entry != nil && !json.Valid(entry.Value)) {
		e.t.Fatalf("%s: the budget record is unreadable: %v", what, err)
	}
}

// checkNoSecretSeen fails the test when a password or an access token the fake
// issued is in the request's error or the mount's log.
func (e *sweepEnv) checkNoSecretSeen(what string, resp *logical.Response, err error) {
	e.t.Helper()
	text := e.logs.String() + errText(err) + errText(respErr(resp))
	if resp != nil {
		text += strings.Join(resp.Warnings, " ")
	}
	secrets := append([]string{sweepPassword}, e.fake.IssuedTokens()...)
	for _, s := range secrets {
		if strings.Contains(text, s) {
			e.t.Fatalf("%s: a secret reached an error, a warning or the log", what)
		}
	}
}
