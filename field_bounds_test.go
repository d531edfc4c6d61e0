package iadvize

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// boundRow is one bounded field: where it is written, and a value of n bytes
// that the field's own checks accept (for an enumeration, none does).
type boundRow struct {
	field string
	path  func(value string) string                // the path written
	data  func(value string) map[string]any        // the request data
	value func(t *testing.T, n int) string         // a value of exactly n bytes
	check func(t *testing.T, e *testEnv, v string) // the accepted value was kept; nil for an enumeration
}

func boundRows() []boundRow {
	rolePath := func(string) string { return "roles/app" }
	field := func(name string) func(string) map[string]any {
		return func(v string) map[string]any { return map[string]any{name: v} }
	}
	random := func(seed uint64) func(*testing.T, int) string {
		return func(_ *testing.T, n int) string { return randomText(n, seed) }
	}
	url := func(_ *testing.T, n int) string {
		const prefix = "https://auth.example.com/"
		return prefix + strings.Repeat("p", n-len(prefix))
	}
	roleField := func(get func(r *role) string) func(*testing.T, *testEnv, string) {
		return func(t *testing.T, e *testEnv, v string) {
			if got := get(storedRole(t, e.storage, "app")); got != v {
				t.Errorf("stored value has %d bytes, want the %d written", len(got), len(v))
			}
		}
	}
	configField := func(name string) func(*testing.T, *testEnv, string) {
		return func(t *testing.T, e *testEnv, v string) {
			if got, _ := e.mustRead("config").Data[name].(string); got != v {
				t.Errorf("config %s has %d bytes, want the %d written", name, len(got), len(v))
			}
		}
	}
	return []boundRow{
		{fieldName, func(v string) string { return "roles/" + v },
			func(string) map[string]any {
				return map[string]any{"username": "svc@example.com", "password": "pw-good"}
			},
			func(_ *testing.T, n int) string { return strings.Repeat("n", n) },
			func(t *testing.T, e *testEnv, v string) {
				if storedRole(t, e.storage, v) == nil {
					t.Error("the role was not stored")
				}
			}},
		{fieldGrantType, rolePath, field(fieldGrantType),
			func(_ *testing.T, n int) string { return strings.Repeat("g", n) }, nil},
		{fieldUsername, rolePath, field(fieldUsername), random(1), roleField(func(r *role) string { return r.Username })},
		{fieldPassword, rolePath, field(fieldPassword), random(2), roleField(func(r *role) string { return r.Password })},
		{fieldClientID, rolePath, field(fieldClientID), random(3), roleField(func(r *role) string { return r.ClientID })},
		{fieldClientSecret, rolePath,
			func(v string) map[string]any { return map[string]any{fieldClientID: "cid", fieldClientSecret: v} },
			random(4), roleField(func(r *role) string { return r.ClientSecret })},
		{fieldScope, rolePath, field(fieldScope), random(5), roleField(func(r *role) string { return r.Scope })},
		{fieldTokenURL, func(string) string { return "config" }, field(fieldTokenURL), url, configField(fieldTokenURL)},
		{fieldVerifyURL, func(string) string { return "config" }, field(fieldVerifyURL), url, configField(fieldVerifyURL)},
		{fieldCAPEM, func(string) string { return "config" }, field(fieldCAPEM),
			func(t *testing.T, n int) string {
				// A certificate, then text outside any PEM block, as bundles carry.
				pem := testCAPEM(t)
				return pem + strings.Repeat("#", n-len(pem))
			}, configField(fieldCAPEM)},
		{fieldClientAuth, func(string) string { return "config" }, field(fieldClientAuth),
			func(_ *testing.T, n int) string { return strings.Repeat("c", n) }, nil},
	}
}

// TestFieldBoundsAcceptTheBoundAndRefuseMoreWith400NamingFieldAndBound: for every
// bounded field, a value of exactly the bound is accepted (or, for an
// enumeration, judged by the field's own check), and one byte more, or 1 MiB (a
// password=@file naming the wrong file), is refused with a 400 that names the
// field, the value's length and the bound, never the value, before anything is
// stored, changed or sent upstream.
func TestFieldBoundsAcceptTheBoundAndRefuseMoreWith400NamingFieldAndBound(t *testing.T) {
	rows := boundRows()
	covered := map[string]bool{}
	for _, row := range rows {
		covered[row.field] = true
	}
	for name := range fieldBounds {
		if !covered[name] {
			t.Errorf("field %s has a bound but no row in this test", name)
		}
	}
	for _, row := range rows {
		bound := fieldBounds[row.field]
		t.Run(row.field+"/at the bound", func(t *testing.T) {
			e, _ := newAppEnv(t, nil, issuing(24*time.Hour), "pw-good")
			v := row.value(t, bound)
			if len(v) != bound {
				t.Fatalf("test value has %d bytes, want %d", len(v), bound)
			}
			resp, err := e.write(row.path(v), row.data(v))
			msg := errorMessage(resp, err)
			if strings.Contains(msg, "at most") {
				t.Fatalf("a value of exactly the bound was refused for its size: %s", msg)
			}
			if row.check == nil {
				if msg == "" {
					t.Fatal("an enumeration accepted a value outside it")
				}
				return
			}
			if err != nil || msg != "" {
				t.Fatalf("a value of exactly the bound was refused: err=%v msg=%q", err, msg)
			}
			row.check(t, e, v)
		})
		for _, n := range []int{bound + 1, 1 << 20} {
			t.Run(fmt.Sprintf("%s/%d bytes", row.field, n), func(t *testing.T) {
				e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-good")
				tok := accessToken(t, e.mustRead("creds/app"))
				cfgBefore := fmt.Sprint(e.mustRead("config").Data)
				v := row.value(t, n)
				want := fmt.Sprintf("%s is %d bytes; at most %d are accepted", row.field, n, bound)
				msg := e.refusedWrite(row.path(v), row.data(v), want)
				if strings.Contains(msg, v[len(v)-16:]) || strings.Contains(e.logs.String(), v[len(v)-16:]) {
					t.Error("the message or the log echoes the value")
				}
				if len(msg) > 200 {
					t.Errorf("the message has %d bytes", len(msg))
				}
				if accessToken(t, e.mustRead("creds/app")) != tok || fmt.Sprint(e.mustRead("config").Data) != cfgBefore {
					t.Error("a refused write changed what is served or the config")
				}
				u.wantCount(t, 1, " (the first login only)")
			})
		}
	}
}

// TestFieldBoundsCountANumberAndNameEveryFieldOver: a value sent as a JSON number
// (which the framework turns into a string) is bounded like a string, and a write
// with several values over their bounds names each.
func TestFieldBoundsCountANumberAndNameEveryFieldOver(t *testing.T) {
	e, _ := newAppEnv(t, nil, issuing(24*time.Hour), "pw-good")
	digits := json.Number("1" + strings.Repeat("0", maxPasswordBytes))
	e.refusedWrite("roles/app", map[string]any{fieldPassword: digits},
		fmt.Sprintf("password is %d bytes; at most %d", maxPasswordBytes+1, maxPasswordBytes))
	msg := e.refusedWrite("roles/app", map[string]any{
		fieldScope: randomText(maxScopeBytes+1, 6), fieldUsername: randomText(maxUsernameBytes+1, 7),
	}, "scope is")
	if !strings.Contains(msg, "username is") {
		t.Errorf("message %q does not name username", msg)
	}
}

// TestBoundedFieldsRefuseANonStringWithoutEchoingIt: a list or an object sent
// for a bounded string field, which has no length in bytes, is refused with a 400
// naming the field before the framework's conversion error could echo it (a
// 1 MiB list of any field would come back whole).
func TestBoundedFieldsRefuseANonStringWithoutEchoingIt(t *testing.T) {
	const marker = "NonString-Value-7Qx"
	big := []any{marker, randomText(1<<20, 8)}
	for _, row := range boundRows() {
		if row.field == fieldName {
			continue // the name comes from the path
		}
		for _, v := range []any{big, map[string]any{"v": marker}} {
			t.Run(row.field, func(t *testing.T) {
				e, _ := newAppEnv(t, nil, issuing(24*time.Hour), "pw-good")
				data := row.data("x")
				data[row.field] = v
				msg := e.refusedWrite(row.path("x"), data, row.field+" must be a string")
				if strings.Contains(msg, marker) || strings.Contains(e.logs.String(), marker) {
					t.Error("the message or the log echoes the value")
				}
			})
		}
	}
}
