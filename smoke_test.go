package iadvize

import (
	"testing"
	"time"
)

func TestSmokeReadTwiceOneLogin(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "s3cret-pw")
	r1 := e.mustRead("creds/app")
	r2 := e.mustRead("creds/app")
	if u.count() != 1 {
		t.Fatalf("logins = %d, want 1", u.count())
	}
	if r1.Data["access_token"] != r2.Data["access_token"] {
		t.Fatalf("tokens differ")
	}
	t.Logf("ttl=%v renewable=%v data keys=%v", r1.Secret.TTL, r1.Secret.Renewable, len(r1.Data))
	s := e.mustRead("static-creds/app")
	t.Logf("static ttl=%v rotation=%v", s.Data["ttl"], s.Data["rotation_period"])
	st := e.mustRead("status/app")
	t.Logf("status=%v", st.Data)
}
