package iadvize

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// Memory targets of the plugin's work with the largest values its fields accept
// (field_bounds.go): bytes allocated per operation, on both sides of an
// in-process loopback upstream (an HTTP round trip, the role's storage reads and
// writes, and the redactor when there is upstream text to judge). Each benchmark
// fails when its operation allocates more than its target:
//
//	go test -run '^$' -bench 'LargestValues|OverTheBound' -benchmem .
const (
	// loginMemoryTarget: a login of a role whose every field is at its bound,
	// that gets a token or is refused with an error text to judge. Before the
	// bounds and the lazy redactor, a 4 KiB password alone cost some 4 MiB per
	// login, and a 1 MiB one about 1 GiB.
	loginMemoryTarget = 2 << 20
	// verifyMemoryTarget: a verify/ check of a token of maxJudgedSecretBytes (the
	// longest the redactor judges) for such a role, answered, or failing with a
	// network error whose text is judged against the role's secrets and the token.
	verifyMemoryTarget = 40 << 20
	// refusedWriteMemoryTarget: a role write refused because a value is over its
	// bound (the value itself arrives in the request and is not counted).
	refusedWriteMemoryTarget = 64 << 10
)

// largestRole is a password-grant role with a client whose every string field is
// at its bound (random characters: every 6-byte window differs).
func largestRole() map[string]any {
	return map[string]any{
		fieldUsername:     randomText(maxUsernameBytes, 11),
		fieldPassword:     randomText(maxPasswordBytes, 12),
		fieldClientID:     randomText(maxClientIDBytes, 13),
		fieldClientSecret: randomText(maxClientSecretBytes, 14),
		fieldScope:        randomText(maxScopeBytes, 15),
	}
}

// newBoundsMount is a mount whose config points at url, with budgets that do not
// stop a benchmark's logins.
func newBoundsMount(b *testing.B, url string) *benchMount {
	b.Helper()
	m := newBenchMount(b, fakeclock.New(), &logical.InmemStorage{})
	m.mustDo(b, logical.CreateOperation, "config", map[string]any{
		fieldTokenURL: url + "/oauth2/token", fieldVerifyURL: url + "/_authenticated",
		fieldUserLoginsPerMinute: maxLoginsPerMinuteSetting, fieldLoginsPerMinute: maxLoginsPerMinuteSetting,
	})
	return m
}

// bytesPerOp runs op b.N times and returns the bytes it allocated per run, after
// failing the benchmark if that is more than target.
func bytesPerOp(b *testing.B, target uint64, op func()) uint64 {
	b.Helper()
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		op()
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	perOp := (after.TotalAlloc - before.TotalAlloc) / uint64(b.N)
	if perOp > target {
		b.Fatalf("%d bytes allocated per operation, want at most %d", perOp, target)
	}
	return perOp
}

// BenchmarkLoginLargestValues: rotate-role (one login) of a role whose every
// field is at its bound, against an upstream that issues a token, and one that
// refuses the credentials with an error_description for the redactor to judge.
func BenchmarkLoginLargestValues(b *testing.B) {
	refusal := `{"error":"invalid_grant","error_description":"` + strings.Repeat("the credentials are not valid. ", 6) + `"}`
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
		refused bool
	}{
		{"token issued", issuing(24 * time.Hour), false},
		{"refused with text to judge", rawAnswer(http.StatusBadRequest, jsonType, nil, refusal), true},
	} {
		b.Run(c.name, func(b *testing.B) {
			ts := httptest.NewServer(c.handler)
			defer ts.Close()
			m := newBoundsMount(b, ts.URL)
			m.mustDo(b, logical.CreateOperation, "roles/app", largestRole())
			bytesPerOp(b, loginMemoryTarget, func() {
				resp, err := m.do(logical.UpdateOperation, "rotate-role/app", nil)
				if refused := err != nil || resp.IsError(); refused != c.refused {
					b.Fatalf("rotate-role: err=%v resp=%v", err, respErr(resp))
				}
			})
		})
	}
}

// BenchmarkVerifyLargestValues: verify/ of a token of maxJudgedSecretBytes for a
// role whose every field is at its bound, when upstream answers, and when it
// cannot be reached (the network error's text is judged against the password, the
// client secret and the token). Each check comes verifyInterval after the last,
// so that each reaches upstream.
func BenchmarkVerifyLargestValues(b *testing.B) {
	token := tokenText(maxJudgedSecretBytes, 16)
	for _, reachable := range []bool{true, false} {
		name := "upstream unreachable"
		if reachable {
			name = "authenticated"
		}
		b.Run(name, func(b *testing.B) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/_authenticated" {
					rawAnswer(http.StatusOK, jsonType, nil, `{"authenticated":true}`)(w, r)
					return
				}
				rawAnswer(http.StatusOK, jsonType, nil, `{"access_token":"`+token+`","expires_in":2147483647}`)(w, r)
			}))
			defer ts.Close()
			m := newBoundsMount(b, ts.URL)
			m.mustDo(b, logical.CreateOperation, "roles/app", largestRole())
			m.mustDo(b, logical.ReadOperation, "creds/app", nil)
			if !reachable {
				ts.Close()
			}
			bytesPerOp(b, verifyMemoryTarget, func() {
				m.clock.Advance(verifyInterval)
				resp, err := m.do(logical.ReadOperation, "verify/app", nil)
				if ok := err == nil && !resp.IsError(); ok != reachable {
					b.Fatalf("verify: err=%v resp=%v", err, respErr(resp))
				}
			})
		})
	}
}

// BenchmarkRoleWriteOverTheBound: a role write with a 1 MiB password (a
// password=@file naming the wrong file) is refused at a cost that does not depend
// on the value's length.
func BenchmarkRoleWriteOverTheBound(b *testing.B) {
	m := newBoundsMount(b, "https://auth.example.com")
	m.mustDo(b, logical.CreateOperation, "roles/app", map[string]any{fieldUsername: "svc@example.com", fieldPassword: "pw-good"})
	data := map[string]any{fieldPassword: randomText(1<<20, 17)}
	bytesPerOp(b, refusedWriteMemoryTarget, func() {
		resp, err := m.do(logical.UpdateOperation, "roles/app", data)
		if err != nil || !resp.IsError() {
			b.Fatalf("a 1 MiB password was not refused: err=%v", err)
		}
	})
}

// BenchmarkRedactorJudgesText: one judgement of an upstream error text (200
// bytes, and maxCheckedText, the longest judged) against the largest secrets a
// role accepts, and against those and a token of maxJudgedSecretBytes (verify/).
func BenchmarkRedactorJudgesText(b *testing.B) {
	password, clientSecret := randomText(maxPasswordBytes, 12), randomText(maxClientSecretBytes, 14)
	token := tokenText(maxJudgedSecretBytes, 16)
	for _, c := range []struct {
		name    string
		secrets []string
		text    string
	}{
		{"role secrets/200 B text", []string{password, clientSecret}, randomText(200, 18)},
		{"role secrets/4 KiB text", []string{password, clientSecret}, randomText(maxCheckedText, 18)},
		{"role secrets and token/200 B text", []string{password, clientSecret, token}, randomText(200, 18)},
		{"role secrets and token/4 KiB text", []string{password, clientSecret, token}, randomText(maxCheckedText, 18)},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := newRedactor(c.secrets...)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r.leaks(c.text)
			}
		})
	}
}
