package iadvize

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
)

func TestDurationDefault(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 10 * time.Second: "10s", 5 * time.Minute: "5m", 90 * time.Second: "1m30s",
		time.Hour + time.Second: "1h0m1s", 0: "0s",
	} {
		if got := durationDefault(d); got != want {
			t.Errorf("durationDefault(%s) = %q, want %q", d, got, want)
		}
	}
}

// Every duration field's Default is a string (Vault's OpenAPI document types
// durations as strings) that the framework reads as the documented default.
func TestDurationFieldDefaultsAreStrings(t *testing.T) {
	b := newBackend(time.Now, nil)
	n := 0
	for _, p := range b.Paths {
		for name, f := range p.Fields {
			if f.Type != framework.TypeDurationSecond || f.Default == nil {
				continue
			}
			n++
			s, ok := f.Default.(string)
			if !ok {
				t.Errorf("%s: field %s has Default %#v (%T), want a duration string", p.Pattern, name, f.Default, f.Default)
				continue
			}
			d := &framework.FieldData{Raw: map[string]any{}, Schema: map[string]*framework.FieldSchema{name: f}}
			secs := d.Get(name).(int)
			want, err := time.ParseDuration(s)
			if err != nil || time.Duration(secs)*time.Second != want {
				t.Errorf("%s: field %s default %q reads as %d s (%v)", p.Pattern, name, s, secs, err)
			}
		}
	}
	if n == 0 {
		t.Fatal("no duration field with a default found")
	}
}
