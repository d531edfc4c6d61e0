package fakeiadvize

import "testing"

func TestReset(t *testing.T) {
	f, _ := newFake(t, Options{UserLoginsPerMinute: 1})
	tok := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
	if w := login(f, user, password, "10.0.0.1"); w.Code != 429 {
		t.Fatalf("status %d, want 429", w.Code)
	}
	f.Reset()
	st := f.Stats()
	if st.LoginAttempts != 0 || st.RateLimited != 0 || len(st.UserAttempts) != 0 || len(f.LoginTimes()) != 0 {
		t.Errorf("after Reset: %+v, %d login times", st, len(f.LoginTimes()))
	}
	// The block is gone; users and tokens are kept.
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Errorf("after Reset: status %d, want 200", w.Code)
	}
	if code := verify(f, tok); code != 200 {
		t.Errorf("token issued before Reset: status %d, want 200", code)
	}
}
