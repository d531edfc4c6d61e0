package iadvize

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// secretWindow is the length, in bytes, of the shortest piece of a secret that
// the plugin refuses to repeat: upstream text holding any secretWindow
// consecutive characters of a secret, in any of the encodings below, is withheld
// whole (README, "What it never does").
const secretWindow = 6

// withheld replaces upstream text that held part of a secret. It says why, so an
// operator knows the text was not simply empty.
const withheld = "[upstream text withheld: it held part of a credential]"

// redactor decides whether text that came from upstream may be repeated in an
// error message, a log line, status/ or storage. It matches case-insensitively
// every secretWindow-byte piece of every secret in each form a server might echo
// it: as written, form/URL-encoded (RFC 3986 §2.1, HTML form encoding), as a JSON
// string, form-decoded ('+' read as a space), and base64 (RFC 4648 §4 and §5, at
// each of the three byte alignments, alone or inside "id:secret" as HTTP Basic
// carries it, RFC 7617 §2). It never trims: text is repeated whole or withheld
// whole, so no cut can leave a fragment behind.
//
// The zero redactor (no secrets) withholds nothing.
type redactor struct {
	// needles are the lower-cased pieces to look for: every secretWindow-byte
	// window of each encoded form, or the whole form when it is shorter.
	needles map[string]struct{}
	// short are lower-cased forms shorter than secretWindow, looked for whole.
	short []string
}

// newRedactor builds a redactor for the given secrets; empty strings are ignored.
func newRedactor(secrets ...string) *redactor {
	r := &redactor{needles: make(map[string]struct{})}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for _, form := range textForms(s) {
			r.add(form)
		}
		for _, seg := range base64Segments(s) {
			if len(seg) >= secretWindow {
				r.add(seg)
			}
		}
	}
	return r
}

func (r *redactor) add(form string) {
	form = strings.ToLower(form)
	if len(form) < secretWindow {
		r.short = append(r.short, form)
		return
	}
	for i := 0; i+secretWindow <= len(form); i++ {
		r.needles[form[i:i+secretWindow]] = struct{}{}
	}
}

// leaks reports whether text holds a piece of a secret.
func (r *redactor) leaks(text string) bool {
	if r == nil || text == "" {
		return false
	}
	lower := strings.ToLower(text)
	for _, s := range r.short {
		if strings.Contains(lower, s) {
			return true
		}
	}
	if len(r.needles) == 0 {
		return false
	}
	for i := 0; i+secretWindow <= len(lower); i++ {
		if _, ok := r.needles[lower[i:i+secretWindow]]; ok {
			return true
		}
	}
	return false
}

// clean returns text when it may be repeated, withheld otherwise. Callers cut or
// quote the result only after this decision.
func (r *redactor) clean(text string) string {
	if r.leaks(text) {
		return withheld
	}
	return text
}

// textForms is a secret as written and in each textual encoding a server might
// echo it in.
func textForms(s string) []string {
	forms := []string{
		s,
		url.QueryEscape(s),                  // form encoding: space as '+'
		url.PathEscape(s),                   // percent-encoding: space as %20
		strings.ReplaceAll(s, "+", " "),     // form-decoded by mistake
		jsonString(s, true),                 // JSON, HTML characters escaped (Go's default)
		jsonString(s, false),                // JSON as most servers write it
		asciiJSONString(s),                  // JSON with every non-ASCII rune escaped
		url.QueryEscape(url.QueryEscape(s)), // encoded twice (a proxy re-encoding a form)
	}
	return forms
}

func jsonString(s string, escapeHTML bool) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s) // a string always encodes
	out := strings.TrimSuffix(buf.String(), "\n")
	return strings.TrimSuffix(strings.TrimPrefix(out, `"`), `"`)
}

// asciiJSONString escapes every non-ASCII rune as \uXXXX (UTF-16, RFC 8259 §7).
func asciiJSONString(s string) string {
	var b strings.Builder
	for _, c := range jsonString(s, false) {
		switch {
		case c < utf8.RuneSelf:
			b.WriteRune(c)
		case c > 0xFFFF:
			c -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xD800+(c>>10), 0xDC00+(c&0x3FF))
		default:
			fmt.Fprintf(&b, `\u%04x`, c)
		}
	}
	return b.String()
}

// base64Segments are the parts of the base64 encodings of s (and of its form
// encoding, as HTTP Basic carries it with client_auth=basic_urlencoded) that
// depend on s alone, for each of the three alignments s can have inside a longer
// encoded string: the characters before and after are shared with unknown
// neighbouring bytes and left out.
func base64Segments(s string) []string {
	var segs []string
	for _, raw := range []string{s, url.QueryEscape(s)} {
		for k := 0; k < 3; k++ {
			in := append(make([]byte, k), raw...)
			first := (8*k + 5) / 6  // first character made of s's bits only
			last := 8 * len(in) / 6 // characters before this are complete
			for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
				out := enc.EncodeToString(in)
				if first < last && last <= len(out) {
					segs = append(segs, out[first:last])
				}
			}
		}
	}
	return segs
}
