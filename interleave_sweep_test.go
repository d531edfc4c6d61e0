package iadvize

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// The interleaving sweep: each pair of the things that can happen to a role (a
// read's login, a detached refresh, the background refresh, rotate-role, a
// refused-token report, a credentials rewrite, a delete and re-create, a config
// write, the mount's Clean) runs in both orders against an upstream that holds
// every login until the test answers it, and the held logins are answered first
// to last and last to first. Whatever the order, the token served is the newest
// one the role's current credentials got, never one of other credentials
// (README, "When the plugin logs in": a login's answer is kept only for the
// role it was sent for; an older answer never replaces a newer token).

// heldLogin is one login the sweep's upstream received.
type heldLogin struct {
	version int       // of the credentials it was sent with
	sentAt  time.Time // on the fake clock, which stands still while logins are held
	answer  chan bool // true: a token, false: 503
	// resolved: answered, or given up by the mount (Clean).
	resolved bool
	token    string // the token it was answered, if any
	// delivered: answered with a token while the mount that sent it was alive.
	delivered bool
}

// interleaving is one run of the sweep.
type interleaving struct {
	t       *testing.T
	clock   *fakeclock.Clock
	storage logical.Storage
	e       *testEnv // the mount; a new one over the same storage after Clean

	mu       sync.Mutex
	logins   []*heldLogin
	auto     bool
	versions map[string]int // username+"\x00"+password -> credentials version
	current  int            // the role's credentials version now
	cleaned  bool
	arrived  chan struct{}
	url      string
	first    string // the token of the role's first login
	otherURL string // another token host, serving as this one does
	expiry   time.Time
	asyncs   []asyncOp
	results  []readResult // of asyncs, in order, once answerAll is done
}

// asyncOp is an operation running in a goroutine, and the credentials version
// when it started.
type asyncOp struct {
	name    string
	version int
	done    <-chan readResult
}

// newInterleaving starts a run: role app logged in once, on an upstream that
// holds every later login. withVerify sets verify_url, which says every token is
// invalid (a report then drops the token and logs in); without it, a report
// logs in at most once per interval.
func newInterleaving(t *testing.T, withVerify bool) *interleaving {
	iv := &interleaving{t: t, clock: fakeclock.New(), storage: &logical.InmemStorage{}, auto: true,
		versions: map[string]int{}, arrived: make(chan struct{}, 100)}
	u := newUpstream(t, iv.serve)
	iv.url, iv.otherURL = u.url, newUpstream(t, iv.serve).url
	t.Cleanup(func() { // release what is still held, before the server closes
		iv.mu.Lock()
		defer iv.mu.Unlock()
		for _, l := range iv.logins {
			select {
			case l.answer <- false:
			default:
			}
		}
	})
	iv.e = newTestEnv(t, iv.storage, iv.clock)
	verifyURL := ""
	if withVerify {
		verifyURL = u.url + "/_authenticated"
	}
	iv.e.configure(u, map[string]any{"verify_url": verifyURL, "request_timeout": "60s"})
	iv.setCreds("svc-1@example.com", "pw-1")
	iv.expiry = iv.clock.Now().Add(24 * time.Hour)
	iv.first = accessToken(t, iv.e.mustRead("creds/app"))
	iv.auto = false
	return iv
}

// serve answers the token endpoint: at once in auto mode, otherwise when the
// test answers the login.
func (iv *interleaving) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/_authenticated") {
		jsonAnswer(http.StatusUnauthorized, map[string]any{"error": "invalid_token"})(w, r)
		return
	}
	_ = r.ParseForm()
	iv.mu.Lock()
	l := &heldLogin{version: iv.versions[r.PostForm.Get("username")+"\x00"+r.PostForm.Get("password")],
		sentAt: iv.clock.Now(), answer: make(chan bool, 1)}
	seq := len(iv.logins)
	iv.logins = append(iv.logins, l)
	if iv.auto {
		l.resolved = true
		l.answer <- true
	}
	iv.mu.Unlock()
	iv.arrived <- struct{}{}
	var ok bool
	select {
	case ok = <-l.answer:
	case <-r.Context().Done():
		iv.mu.Lock()
		l.resolved = true
		iv.mu.Unlock()
		return
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	iv.mu.Lock()
	l.token = fmt.Sprintf("tok-%d-v%d", seq, l.version)
	l.delivered = !iv.cleaned
	iv.mu.Unlock()
	namedToken(l.token)(w, r)
}

// setCreds writes role app's credentials as a new version.
func (iv *interleaving) setCreds(username, password string) {
	iv.mu.Lock()
	iv.current++
	iv.versions[username+"\x00"+password] = iv.current
	iv.mu.Unlock()
	iv.e.mustWrite("roles/app", map[string]any{"username": username, "password": password})
}

// async runs a request in a goroutine.
func (iv *interleaving) async(name string, op logical.Operation, path string, data map[string]any) {
	iv.mu.Lock()
	v := iv.current
	iv.mu.Unlock()
	iv.asyncs = append(iv.asyncs, asyncOp{name: name, version: v, done: iv.e.doAsync(op, path, data)})
}

// at moves the clock to t, or a second on when t has passed.
func (iv *interleaving) at(t time.Time) {
	iv.clock.Set(latest(t, iv.clock.Now().Add(time.Second)))
}

// firstExpiry is when the role's first token expires: the ops move the clock
// relative to its life.
func (iv *interleaving) firstExpiry() time.Time { return iv.expiry }

var sweepOps = []struct {
	name string
	run  func(iv *interleaving)
}{
	{"a read's login", func(iv *interleaving) {
		iv.at(iv.firstExpiry().Add(-10 * time.Second)) // inside the skew margin: the read waits
		iv.async("read", logical.ReadOperation, "creds/app", nil)
	}},
	{"a detached refresh", func(iv *interleaving) {
		iv.at(iv.firstExpiry().Add(-time.Hour + time.Second)) // the refresh window
		iv.async("read in the window", logical.ReadOperation, "static-creds/app", nil)
	}},
	{"the background refresh", func(iv *interleaving) {
		iv.at(iv.firstExpiry().Add(-time.Hour - backgroundLead + time.Second))
		iv.async("periodic run", logical.RollbackOperation, "", nil)
	}},
	{"rotate-role", func(iv *interleaving) {
		iv.at(iv.clock.Now())
		iv.async("rotate-role", logical.UpdateOperation, "rotate-role/app", nil)
	}},
	{"a refused-token report", func(iv *interleaving) {
		iv.at(iv.clock.Now())
		iv.async("report", logical.UpdateOperation, "creds/app", map[string]any{fieldRefusedTokenSHA256: tokenSHA256(iv.first)})
	}},
	{"a credentials rewrite", func(iv *interleaving) {
		iv.at(iv.clock.Now())
		iv.mu.Lock()
		n := iv.current + 1
		iv.mu.Unlock()
		iv.setCreds("svc-1@example.com", fmt.Sprintf("pw-%d", n))
	}},
	{"a delete and re-create", func(iv *interleaving) {
		iv.at(iv.clock.Now())
		if resp, err := iv.e.do(logical.DeleteOperation, "roles/app", nil); err != nil || resp.IsError() {
			iv.t.Fatalf("delete: %v %v", err, respErr(resp))
		}
		iv.mu.Lock()
		n := iv.current + 1
		iv.mu.Unlock()
		iv.setCreds(fmt.Sprintf("svc-%d@example.com", n), "pw-1")
	}},
	{"a config write", func(iv *interleaving) {
		iv.at(iv.clock.Now())
		iv.e.mustWrite("config", map[string]any{"refresh_before": "2h", "token_url": iv.url + "/oauth2/token?v=2"})
	}},
	{"a token_url move", func(iv *interleaving) { // the role's credentials wait to be written again
		iv.at(iv.clock.Now())
		iv.e.mustWrite("config", map[string]any{"token_url": iv.otherURL + "/oauth2/token", "verify_url": ""})
	}},
	{"Clean", func(iv *interleaving) {
		iv.e.b.Cleanup(context.Background())
		iv.mu.Lock()
		iv.cleaned = true
		iv.mu.Unlock()
		iv.e = newTestEnv(iv.t, iv.storage, iv.clock) // the mount starts again
	}},
}

func TestInterleavingSweep(t *testing.T) {
	for _, withVerify := range []bool{false, true} {
		for _, a := range sweepOps {
			for _, b := range sweepOps {
				if a.name == b.name {
					continue
				}
				for _, lastFirst := range []bool{false, true} {
					sweepPair(t, withVerify, a.name, a.run, b.name, b.run, lastFirst)
				}
			}
		}
	}
}

// sweepPair runs a, then b, then answers the held logins in the given order,
// and judges what was served.
func sweepPair(t *testing.T, withVerify bool, aName string, a func(*interleaving), bName string, b func(*interleaving), lastFirst bool) {
	order := "answered first to last"
	if lastFirst {
		order = "answered last to first"
	}
	verify := "no verify_url"
	if withVerify {
		verify = "verify_url"
	}
	t.Run(verify+": "+aName+", then "+bName+", "+order, func(t *testing.T) {
		iv := newInterleaving(t, withVerify)
		a(iv)
		iv.settle()
		b(iv)
		iv.settle()
		iv.answerAll(lastFirst)
		iv.check()
	})
}

// settle waits until every goroutine running the mount's code is parked: waiting
// for an answer of upstream that has reached it, or for a flight another runs.
func (iv *interleaving) settle() {
	iv.t.Helper()
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
		iv.mu.Lock()
		pending := 0
		for _, l := range iv.logins {
			if !l.resolved {
				pending++
			}
		}
		iv.mu.Unlock()
		if n, ok, _ := parkedLogins(); ok && n == pending {
			return
		}
	}
	n, _, busy := parkedLogins()
	iv.t.Fatalf("the mount's goroutines did not settle within %v: %d logins in flight, %d held; busy:\n%s", waitFor, n, iv.pending(), busy)
}

// parkedLogins reports whether every goroutine running the plugin's code (but
// the caller) is parked, and how many wait on an upstream answer.
func parkedLogins() (inFlight int, ok bool, busy string) {
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	self := buf[:bytes.IndexByte(buf, '\n')] // "goroutine N [running]:"
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		switch {
		case header == string(self):
			continue
		case !strings.Contains(g, "vault-plugin-secrets-iadvize."):
			continue // not the plugin's, nor the test's
		case strings.Contains(g, "(*interleaving).serve"):
			continue // the upstream, holding a login
		case strings.Contains(g, "testing.(*T).Run("):
			continue // a parent test, waiting for its subtest
		case strings.Contains(header, "[runnable") || strings.Contains(header, "[running") || strings.Contains(header, "[syscall"):
			return 0, false, g
		case strings.Contains(g, "persistConn).roundTrip"):
			inFlight++
		case strings.Contains(g, "singleflight.(*Group).Do"), strings.Contains(g, "errgroup.(*Group).Wait"):
		default:
			return 0, false, g // on a lock, or between steps
		}
	}
	return inFlight, true, ""
}

// pending counts the logins held and not resolved.
func (iv *interleaving) pending() int {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	n := 0
	for _, l := range iv.logins {
		if !l.resolved {
			n++
		}
	}
	return n
}

// answerAll answers the held logins, first to last or last to first, then every
// login sent meanwhile as it comes, until no request runs.
func (iv *interleaving) answerAll(lastFirst bool) {
	iv.t.Helper()
	iv.mu.Lock()
	var order []*heldLogin
	for _, l := range iv.logins {
		if !l.resolved {
			order = append(order, l)
		}
	}
	iv.mu.Unlock()
	if lastFirst {
		for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
			order[i], order[j] = order[j], order[i]
		}
	}
	for _, l := range order {
		iv.answer(l)
		iv.settle()
	}
	iv.mu.Lock()
	iv.auto = true
	var rest []*heldLogin
	for _, l := range iv.logins {
		if !l.resolved {
			rest = append(rest, l)
		}
	}
	iv.mu.Unlock()
	for _, l := range rest {
		iv.answer(l)
	}
	for _, op := range iv.asyncs {
		iv.results = append(iv.results, awaitResult(iv.t, op.done, op.name))
	}
	iv.settle()
}

// answer answers a held login with a token, unless it was resolved already.
func (iv *interleaving) answer(l *heldLogin) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if !l.resolved {
		l.resolved = true
		l.answer <- true
	}
}

// check judges what was served.
func (iv *interleaving) check() {
	iv.t.Helper()
	iv.mu.Lock()
	current := iv.current
	newest := time.Time{}
	for _, l := range iv.logins {
		if l.delivered && l.version == current && l.sentAt.After(newest) {
			newest = l.sentAt
		}
	}
	iv.mu.Unlock()
	version := func(tok string) (int, time.Time) {
		iv.mu.Lock()
		defer iv.mu.Unlock()
		for _, l := range iv.logins {
			if l.token == tok {
				return l.version, l.sentAt
			}
		}
		return 0, time.Time{}
	}
	for i, op := range iv.asyncs {
		r := iv.results[i]
		if r.err != nil || r.resp == nil || r.resp.IsError() {
			continue // a 409, a 502 or a Clean's 503: nothing served
		}
		if tok, _ := r.resp.Data["access_token"].(string); tok != "" {
			if v, _ := version(tok); v < op.version {
				iv.t.Fatalf("%s, started under credentials v%d, was served a token of v%d", op.name, op.version, v)
			}
		}
	}
	iv.e.read("creds/app") // may start a refresh of its own, answered at once
	iv.e.settle()
	iv.mu.Lock()
	for _, l := range iv.logins {
		if l.delivered && l.version == current && l.sentAt.After(newest) {
			newest = l.sentAt
		}
	}
	iv.mu.Unlock()
	resp, err := iv.e.read("creds/app")
	if codedStatus(err) == http.StatusConflict && strings.Contains(err.Error(), "written again") {
		// The credentials wait to be written for the new token host, and hold no
		// token: right, unless one of them was delivered.
		if !newest.IsZero() {
			iv.t.Fatalf("a token of the current credentials was delivered, yet the read got: %v", err)
		}
		return
	}
	if err != nil || resp == nil || resp.IsError() {
		iv.t.Fatalf("the final read: %v %v", err, respErr(resp))
	}
	tok := accessToken(iv.t, resp)
	v, sent := version(tok)
	switch {
	case v != current:
		iv.t.Fatalf("served a token of credentials v%d; the role's are v%d", v, current)
	case sent.Before(newest):
		iv.t.Fatalf("served a token sent at %s; one of the same credentials sent at %s was answered", sent, newest)
	}
	if st := storedToken(iv.t, iv.storage, "app"); st == nil || st.AccessToken != tok {
		iv.t.Fatal("storage does not hold the token served")
	}
}
