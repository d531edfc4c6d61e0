package iadvize

import (
	"strings"
	"time"
)

// durationDefault is a duration as a field's schema Default: a string such as
// "1h" or "10s", which the framework parses like any duration input. Vault's
// OpenAPI document gives duration fields the type string, which an integer
// default would not validate against.
func durationDefault(d time.Duration) string {
	s := d.String() // "1h0m0s", "5m0s", "10s", "1m30s"
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
