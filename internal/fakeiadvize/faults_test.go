package fakeiadvize

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestFaults(t *testing.T) {
	tests := []struct {
		name        string
		fault       Fault
		wantCode    int
		wantType    string // Content-Type prefix
		wantRetry   string
		injected429 bool
		check       func(t *testing.T, f *Server, body []byte)
	}{
		{
			name: "rate_limit", fault: Fault{Mode: FaultRateLimit, RetryAfter: 120},
			wantCode: 429, wantType: "application/json", wantRetry: "120", injected429: true,
			check: wantErrorCode("too_many_requests"),
		},
		{
			name: "rate_limit default retry", fault: Fault{Mode: FaultRateLimit},
			wantCode: 429, wantType: "application/json", wantRetry: "60", injected429: true,
			check: wantErrorCode("too_many_requests"),
		},
		{
			name: "rate_limit_no_retry_after", fault: Fault{Mode: FaultRateLimitNoRetry},
			wantCode: 429, wantType: "application/json", injected429: true,
			check: wantErrorCode("too_many_requests"),
		},
		{
			name: "server_error default", fault: Fault{Mode: FaultServerError},
			wantCode: 503, wantType: "application/json", check: wantErrorCode("server_error"),
		},
		{
			name: "server_error 500 plain", fault: Fault{Mode: FaultServerError, Status: 500, PlainText: true},
			wantCode: 500, wantType: "text/plain",
			check: func(t *testing.T, _ *Server, body []byte) {
				if json.Valid(body) {
					t.Errorf("plain body is JSON")
				}
			},
		},
		{
			name: "server_error 502", fault: Fault{Mode: FaultServerError, Status: 502},
			wantCode: 502, wantType: "application/json", check: wantErrorCode("server_error"),
		},
		{
			name: "html", fault: Fault{Mode: FaultHTML},
			wantCode: 502, wantType: "text/html", check: wantHTML,
		},
		{
			name: "html_200", fault: Fault{Mode: FaultHTML200},
			wantCode: 200, wantType: "text/html", check: wantHTML,
		},
		{
			name: "no_expires_in", fault: Fault{Mode: FaultNoExpiresIn},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if _, ok := m["expires_in"]; ok {
					t.Error("expires_in present")
				}
				wantValidToken(t, f, m)
			},
		},
		{
			name: "zero_expires_in", fault: Fault{Mode: FaultZeroExpiresIn},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if v, ok := m["expires_in"].(float64); !ok || v != 0 {
					t.Errorf("expires_in = %v, want 0", m["expires_in"])
				}
				wantValidToken(t, f, m)
			},
		},
		{
			name: "negative_expires_in", fault: Fault{Mode: FaultNegativeExpiresIn},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if v, ok := m["expires_in"].(float64); !ok || v >= 0 {
					t.Errorf("expires_in = %v, want negative", m["expires_in"])
				}
				wantValidToken(t, f, m)
			},
		},
		{
			name: "no_access_token", fault: Fault{Mode: FaultNoAccessToken},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if _, ok := m["access_token"]; ok {
					t.Error("access_token present")
				}
				if m["expires_in"] != float64(86400) {
					t.Errorf("expires_in = %v, want 86400", m["expires_in"])
				}
			},
		},
		{
			name: "huge_body", fault: Fault{Mode: FaultHugeBody},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				if len(body) < 2<<20 {
					t.Errorf("body is %d bytes, want at least 2 MiB", len(body))
				}
				m := decodeMap(t, body)
				pad, _ := m["pad"].(string)
				if len(pad) != 2<<20 || strings.Trim(pad, "x") != "" {
					t.Errorf("pad is %d bytes, want 2 MiB of x", len(pad))
				}
				if m["expires_in"] != float64(86400) {
					t.Errorf("expires_in = %v, want 86400", m["expires_in"])
				}
				wantValidToken(t, f, m)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newFake(t, Options{})
			fault := tt.fault
			fault.Count = 2
			if err := f.InjectFault(fault); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				w := login(f, user, password, "10.0.0.1")
				if w.Code != tt.wantCode {
					t.Fatalf("request %d: status %d, want %d", i, w.Code, tt.wantCode)
				}
				if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, tt.wantType) {
					t.Errorf("Content-Type = %q, want %s", ct, tt.wantType)
				}
				if got := w.Header().Get("Retry-After"); got != tt.wantRetry {
					t.Errorf("Retry-After = %q, want %q", got, tt.wantRetry)
				}
				tt.check(t, f, w.Body.Bytes())
				if i == 0 {
					if left := f.Stats().Fault; left.Mode != tt.fault.Mode || left.Count != 1 {
						t.Errorf("after one request Stats().Fault = %+v, want %s with 1 left", left, tt.fault.Mode)
					}
				}
			}
			// The fault is used up: back to normal.
			w := login(f, user, password, "10.0.0.1")
			if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("after the fault: status %d, Content-Type %q; want a normal 200", w.Code, w.Header().Get("Content-Type"))
			}
			if b := decodeToken(t, w); b.AccessToken == nil || b.ExpiresIn == nil || *b.ExpiresIn != 86400 {
				t.Errorf("after the fault: answer is not a normal token answer")
			}
			st := f.Stats()
			want429, wantOther := 0, 2
			if tt.injected429 {
				want429, wantOther = 2, 0
			}
			if st.InjectedRateLimited != want429 || st.InjectedFaults != wantOther || st.RateLimited != 0 ||
				st.LoginSuccesses != 1 || st.LoginAttempts != 3 || st.Fault.Mode != FaultNone {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

func wantErrorCode(code string) func(*testing.T, *Server, []byte) {
	return func(t *testing.T, _ *Server, body []byte) {
		t.Helper()
		var e oauthError
		if err := json.Unmarshal(body, &e); err != nil || e.Error != code {
			t.Errorf("error = %q (decode error %v), want %q", e.Error, err, code)
		}
	}
}

func wantHTML(t *testing.T, _ *Server, body []byte) {
	t.Helper()
	if !bytes.Contains(body, []byte("<html")) || json.Valid(body) {
		t.Errorf("body is not an HTML page")
	}
}

func decodeMap(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	return m
}

func wantValidToken(t *testing.T, f *Server, m map[string]any) {
	t.Helper()
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatal("no access_token")
	}
	if code := verify(f, tok); code != 200 {
		t.Errorf("/_authenticated with the faulted answer's token = %d, want 200", code)
	}
}

func TestFaultUntilCleared(t *testing.T) {
	f, _ := newFake(t, Options{UserLoginsPerMinute: -1})
	if err := f.InjectFault(Fault{Mode: FaultServerError}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
			t.Fatalf("request %d: status %d, want 503", i, w.Code)
		}
	}
	f.ClearFault()
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Fatalf("after ClearFault: status %d, want 200", w.Code)
	}
	if st := f.Stats(); st.InjectedFaults != 20 {
		t.Errorf("InjectedFaults = %d, want 20", st.InjectedFaults)
	}
}

func TestFaultsTakePrecedenceAndCount(t *testing.T) {
	// A fault answers even a blocked user, and its requests count against
	// the limits.
	f, _ := newFake(t, Options{UserLoginsPerMinute: 2})
	if err := f.InjectFault(Fault{Mode: FaultServerError, Count: 3}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
			t.Fatalf("status %d, want 503", w.Code)
		}
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 429 {
		t.Fatalf("after the fault: status %d, want 429 (4 attempts > limit 2)", w.Code)
	}
}

func TestInjectFaultValidation(t *testing.T) {
	f, _ := newFake(t, Options{})
	for _, bad := range []Fault{
		{Mode: "explode"},
		{Mode: FaultRateLimit, Count: -1},
		{Mode: FaultRateLimit, RetryAfter: -5},
		{Mode: FaultServerError, Status: 404},
		{Mode: FaultServerError, Status: 600},
	} {
		if err := f.InjectFault(bad); err == nil {
			t.Errorf("InjectFault(%+v) succeeded, want an error", bad)
		}
	}
	if st := f.Stats(); st.Fault.Mode != FaultNone {
		t.Errorf("a rejected fault was installed: %+v", st.Fault)
	}
}

// waitHanging waits until n requests are held by the hang fault. It yields
// instead of sleeping; the deadline only guards against a broken fake.
func waitHanging(t *testing.T, f *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.Stats().Hanging != n {
		if time.Now().After(deadline) {
			t.Fatalf("Hanging = %d, want %d", f.Stats().Hanging, n)
		}
		runtime.Gosched()
	}
}

// waitDone fails the test if ch is not closed soon; the deadline only guards
// against a broken fake.
func waitDone(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

func TestHang(t *testing.T) {
	tests := []struct {
		name     string
		end      func(f *Server, cancel context.CancelFunc)
		wantCode int // 0: nothing written
		wantStat func(Stats) int
	}{
		{
			name:     "client gives up",
			end:      func(_ *Server, cancel context.CancelFunc) { cancel() },
			wantStat: func(s Stats) int { return s.InjectedFaults },
		},
		{
			name:     "fault cleared: normal answer",
			end:      func(f *Server, _ context.CancelFunc) { f.ClearFault() },
			wantCode: 200, wantStat: func(s Stats) int { return s.LoginSuccesses - 1 },
		},
		{
			name: "fault replaced: normal answer",
			end: func(f *Server, _ context.CancelFunc) {
				_ = f.InjectFault(Fault{Mode: FaultHTML, Count: 1})
			},
			wantCode: 200, wantStat: func(s Stats) int { return s.LoginSuccesses - 1 },
		},
		{
			name:     "fake closed",
			end:      func(f *Server, _ context.CancelFunc) { f.Close() },
			wantCode: 503, wantStat: func(s Stats) int { return s.InjectedFaults },
		},
	}
	for _, tt := range tests {
		// synctest.Wait returns once every goroutine of the bubble is blocked,
		// so "still hanging" is checked deterministically, and the bubble
		// fails the test if the handler goroutine outlives it.
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f, _ := newFake(t, Options{})
				// Count 1: using the fault up does not release the request.
				if err := f.InjectFault(Fault{Mode: FaultHang, Count: 1}); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				r := tokenRequestFor(passwordForm(user, password)).WithContext(ctx)
				w := httptest.NewRecorder()
				done := make(chan struct{})
				go func() {
					defer close(done)
					f.ServeHTTP(w, r)
				}()
				synctest.Wait()
				// The fault is used up: the next request is answered normally,
				// and the first one keeps hanging.
				if w2 := login(f, user, password, "10.0.0.9"); w2.Code != 200 {
					t.Fatalf("request after the used-up hang: status %d, want 200", w2.Code)
				}
				synctest.Wait()
				select {
				case <-done:
					t.Fatalf("the request was answered while hanging")
				default:
				}
				if st := f.Stats(); st.Hanging != 1 {
					t.Fatalf("Hanging = %d, want 1", st.Hanging)
				}

				tt.end(f, cancel)
				<-done
				if tt.wantCode == 0 {
					if w.Body.Len() != 0 || w.Header().Get("Content-Type") != "" {
						t.Errorf("something was written to a client that gave up")
					}
				} else if w.Code != tt.wantCode {
					t.Errorf("status %d, want %d", w.Code, tt.wantCode)
				}
				st := f.Stats()
				if tt.wantStat(st) != 1 || st.Hanging != 0 || st.LoginSuccesses+st.InjectedFaults != 2 {
					t.Errorf("stats = %+v", st)
				}
			})
		})
	}
}

func TestHangOverHTTPDoesNotBlockClose(t *testing.T) {
	f, _ := newFake(t, Options{})
	ts := httptest.NewServer(f)
	t.Cleanup(func() { f.Close(); ts.Close() }) // in that order, if the test fails early
	if err := f.InjectFault(Fault{Mode: FaultHang}); err != nil {
		t.Fatal(err)
	}

	// One client gives up on its own.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan struct{})
	go func() {
		defer close(gaveUp)
		if _, err := postToken(ctx, ts.URL); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled request: error %v, want context.Canceled", err)
		}
	}()
	waitHanging(t, f, 1)
	cancel()
	waitDone(t, gaveUp, "the cancelled request")
	waitHanging(t, f, 0)

	// Two more are held when the fake closes.
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := postToken(context.Background(), ts.URL)
			if err != nil {
				t.Errorf("held request: %v", err)
				codes <- 0
				return
			}
			codes <- resp.StatusCode
		}()
	}
	waitHanging(t, f, 2)
	f.Close()
	for range 2 {
		if code := <-codes; code != 503 {
			t.Errorf("held request answered %d after Close, want 503", code)
		}
	}
	// httptest.Server.Close waits for every handler: it returns only if none leaked.
	closed := make(chan struct{})
	go func() { defer close(closed); ts.Close() }()
	waitDone(t, closed, "httptest.Server.Close")
	if st := f.Stats(); st.InjectedFaults != 3 || st.Hanging != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestHangAfterCloseAnswersAtOnce(t *testing.T) {
	f, _ := newFake(t, Options{})
	f.Close()
	if err := f.InjectFault(Fault{Mode: FaultHang}); err != nil {
		t.Fatal(err)
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
		t.Errorf("status %d, want 503", w.Code)
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
		t.Errorf("status %d, want 503", w.Code)
	}
}

func postToken(ctx context.Context, base string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth2/token",
		strings.NewReader(passwordForm(user, password).Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

func TestResetWhileHanging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _ := newFake(t, Options{}) // its cleanup checks the counters add up
		if err := f.InjectFault(Fault{Mode: FaultHang}); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			login(f, user, password, "10.0.0.1")
		}()
		synctest.Wait()
		f.Reset()
		if st := f.Stats(); st.LoginAttempts != 1 || st.Hanging != 1 {
			t.Errorf("after Reset: attempts %d, hanging %d; want 1, 1", st.LoginAttempts, st.Hanging)
		}
		f.ClearFault()
		<-done
		if st := f.Stats(); st.LoginAttempts != 1 || st.LoginSuccesses != 1 || st.Hanging != 0 {
			t.Errorf("after release: %+v", st)
		}
	})
}
