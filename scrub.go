package iadvize

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// secretWindow is the length, in bytes, of the shortest piece of a secret that
// the plugin refuses to repeat: upstream text holding any secretWindow
// consecutive characters of a secret, in any of the encodings below, is withheld
// whole (README, "When the plugin logs in": upstream error text never carries a secret).
const secretWindow = 6

// withheld replaces upstream text that held part of a secret. It says why, so an
// operator knows the text was not simply empty.
const withheld = "[upstream text withheld: it held part of a credential]"

// maxJudgedSecretBytes is the longest secret, in bytes, that the redactor compares
// upstream text with. Role secrets are far shorter (fieldBounds: 4 KiB); the
// longest secret it is given is the access token that verify/ sends, which travels
// in an Authorization header: common servers and proxies refuse request headers
// over 8 to 64 KiB (RFC 9110 §5.4 leaves the limit to them), so no token an API
// accepts is longer. A longer token is still served, never refused as malformed
// (README, "Upstreams": what real servers send is accepted as a token; a broker
// stricter than its servers blocks every integration behind it). Only upstream
// text judged against it is withheld, all of it: judging takes time in proportion
// to the secrets' length.
const maxJudgedSecretBytes = 64 << 10

// redactor decides whether text that came from upstream may be repeated in an
// error message, a log line, status/ or storage. It matches case-insensitively
// every secretWindow-byte piece of every secret in each form a server might echo
// it: as written, form/URL-encoded (RFC 3986 §2.1, HTML form encoding), as a JSON
// string, form-decoded ('+' read as a space), and base64 (RFC 4648 §4 and §5, at
// each of the three byte alignments, alone or inside "id:secret" as HTTP Basic
// carries it, RFC 7617 §2). It never trims: text is repeated whole or withheld
// whole, so no cut can leave a fragment behind.
//
// It keeps the secrets and derives nothing from them until it judges a text
// (leaks): a login that succeeds, which has no upstream text to judge, costs it
// nothing whatever the secrets' length. Judging one text costs memory in
// proportion to the text (at most maxCheckedText, in each of its decoded views)
// and time in proportion to the secrets' encoded forms (each secret at most
// maxJudgedSecretBytes; a longer one makes every text withheld).
//
// The zero redactor (no secrets) withholds nothing. A redactor is not changed
// once built, so goroutines may share it.
type redactor struct {
	// secrets are the non-empty secrets, as given.
	secrets []string
	// unjudged: a secret is longer than maxJudgedSecretBytes; every non-empty
	// text is withheld.
	unjudged bool
}

// newRedactor builds a redactor for the given secrets; empty strings are ignored.
// It copies nothing and encodes nothing.
func newRedactor(secrets ...string) *redactor {
	r := &redactor{secrets: make([]string, 0, len(secrets))}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		r.secrets = append(r.secrets, s)
		r.unjudged = r.unjudged || len(s) > maxJudgedSecretBytes
	}
	return r
}

// maxCheckedText is the longest upstream text the redactor judges; longer text
// is withheld unread (a message repeats at most a few hundred bytes of it).
const maxCheckedText = 4 << 10

// leaks reports whether text holds a piece of a secret, as written or once
// decoded (see textViews): an encoding the secret forms above do not list is
// still caught when a decoder of the text undoes it. Every secretWindow-byte
// window of every lower-cased view goes into a set; then each lower-cased form
// of each secret is looked up in it, window by window (a form shorter than
// secretWindow is looked for whole in each view).
func (r *redactor) leaks(text string) bool {
	if r == nil || text == "" || len(r.secrets) == 0 {
		return false
	}
	if len(text) > maxCheckedText || r.unjudged {
		return true
	}
	views := textViews(text)
	size := 0
	for i, view := range views {
		views[i] = strings.ToLower(view)
		size += len(views[i])
	}
	windows := newWindowSet(size)
	for _, view := range views {
		eachWindowKey(view, func(k uint64) bool { windows.add(k); return false })
	}
	held := func(form string) bool {
		if len(form) < secretWindow || !isASCII(form) {
			form = strings.ToLower(form) // eachWindowKey lower-cases ASCII letters itself
		}
		if len(form) < secretWindow {
			for _, view := range views {
				if strings.Contains(view, form) {
					return true
				}
			}
			return false
		}
		return heldWindow(form, windows)
	}
	for _, s := range r.secrets {
		for _, form := range textForms(s) {
			if held(form) {
				return true
			}
		}
		if eachBase64Segment(s, func(seg []byte) bool { return heldWindow(seg, windows) }) {
			return true
		}
	}
	return false
}

// heldWindow reports whether a secretWindow-byte window of form, an ASCII or
// lower-cased text, is in windows. A form shorter than a window has none.
func heldWindow[T string | []byte](form T, windows *windowSet) bool {
	return eachWindowKey(form, windows.has)
}

// eachWindowKey calls fn with the key of each secretWindow-byte window of s, in
// order, until a call returns true, and reports whether one did. A key is the
// window's bytes packed into an integer, ASCII letters lower-cased
// (strings.ToLower does no more to ASCII): two windows are equal, in any case,
// when their keys are.
func eachWindowKey[T string | []byte](s T, fn func(key uint64) bool) bool {
	const mask = 1<<(8*secretWindow) - 1
	var k uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		k = (k<<8 | uint64(c)) & mask
		if i >= secretWindow-1 && fn(k) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// windowSet is a set of window keys (eachWindowKey) with a bitmap of their hashes in
// front, sixteen bits or more a key: most keys that are not in it (nearly every
// window of a secret's forms, looked up one by one) are told by one bit, without
// a map lookup.
type windowSet struct {
	bits  []uint64
	shift uint // a key's bit is its hash's top 64-shift bits
	keys  map[uint64]struct{}
}

// newWindowSet is an empty set sized for about n keys.
func newWindowSet(n int) *windowSet {
	shift := uint(64 - 6) // at least 64 bits
	for 1<<(64-shift) < 16*n {
		shift--
	}
	return &windowSet{bits: make([]uint64, 1<<(64-shift)/64), shift: shift, keys: make(map[uint64]struct{}, n)}
}

func (w *windowSet) bit(k uint64) uint64 { return (k * 0x9e3779b97f4a7c15) >> w.shift }

func (w *windowSet) add(k uint64) {
	b := w.bit(k)
	w.bits[b/64] |= 1 << (b % 64)
	w.keys[k] = struct{}{}
}

func (w *windowSet) has(k uint64) bool {
	if b := w.bit(k); w.bits[b/64]&(1<<(b%64)) == 0 {
		return false
	}
	_, ok := w.keys[k]
	return ok
}

// A window must fit in a key's 64 bits.
const _ = uint(8 - secretWindow)

// textViews is text as written and as each decoder reads it, and each of those
// decoded once more (an escape inside an escape): percent-decoding (every %XX,
// RFC 3986 §2.1, and '+' as a space, HTML forms), JSON string escapes (RFC 8259
// §7, including \/ and \uXXXX), HTML character references, runs of hex digits,
// and the text with its white space removed (a secret cut into pieces).
func textViews(text string) []string {
	views := []string{text}
	seen := map[string]bool{text: true}
	for round := 0; round < 2; round++ {
		for _, v := range views {
			for _, decode := range textDecoders {
				if d := decode(v); !seen[d] {
					seen[d] = true
					views = append(views, d)
				}
			}
		}
	}
	return views
}

var textDecoders = []func(string) string{
	func(s string) string { return percentDecode(s, false) },
	func(s string) string { return percentDecode(s, true) },
	jsonUnescape,
	html.UnescapeString,
	hexDecodeRuns,
	func(s string) string { return strings.Join(strings.Fields(s), "") },
}

// percentDecode decodes every valid %XX and leaves anything else as it is; with
// plus, '+' reads as a space.
func percentDecode(s string, plus bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case s[i] == '+' && plus:
			b.WriteByte(' ')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// jsonUnescape undoes JSON string escapes wherever they stand, leaving anything
// that is not one as it is.
func jsonUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch c := s[i+1]; c {
		case '"', '\\', '/':
			b.WriteByte(c)
			i++
		case 'b', 'f', 'n', 'r', 't':
			b.WriteByte(map[byte]byte{'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[c])
			i++
		case 'u':
			r, n := jsonRune(s[i:])
			if n == 0 {
				b.WriteByte(s[i])
				continue
			}
			b.WriteRune(r)
			i += n - 1
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// jsonRune reads \uXXXX (and a following low surrogate) at the start of s: the
// rune and the bytes it took, 0 when s does not start with one.
func jsonRune(s string) (rune, int) {
	hex4 := func(s string) (rune, bool) {
		if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(s[2:6], 16, 32)
		return rune(v), err == nil
	}
	r, ok := hex4(s)
	if !ok {
		return 0, 0
	}
	if utf16.IsSurrogate(r) {
		if r2, ok := hex4(s[6:]); ok {
			return utf16.DecodeRune(r, r2), 12
		}
	}
	return r, 6
}

// hexDecodeRuns replaces each run of at least 2*secretWindow hex digits by the
// bytes it encodes.
func hexDecodeRuns(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && isHex(s[j]) {
			j++
		}
		if n := (j - i) &^ 1; n >= 2*secretWindow {
			decoded, _ := hex.DecodeString(s[i : i+n])
			b.Write(decoded)
			b.WriteString(s[i+n : j])
		} else {
			b.WriteString(s[i:j])
		}
		if j < len(s) {
			b.WriteByte(s[j])
			j++
		}
		i = j
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
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
		strings.Join(strings.Fields(s), ""), // as a text view without white space sees it
	}
	if l1, ok := latin1(s); ok {
		forms = append(forms, l1) // a server that re-encodes in ISO 8859-1
	}
	return append(forms, mojibake(s))
}

// latin1 is s in ISO 8859-1, when every rune of it has a code there.
func latin1(s string) (string, bool) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return "", false
		}
		b = append(b, byte(r))
	}
	return string(b), true
}

// mojibake is s's UTF-8 bytes read as ISO 8859-1 and written again in UTF-8 ("é"
// becomes "Ã©"), as a server confused about encodings echoes it.
func mojibake(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
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

// eachBase64Segment calls fn with each part of the base64 encodings of s (and of
// its form encoding, as HTTP Basic carries it with client_auth=basic_urlencoded)
// that depends on s alone, for each of the three alignments s can have inside a
// longer encoded string: the characters before and after are shared with unknown
// neighbouring bytes and left out. It stops at the first call that returns true,
// and reports whether one did. The segments share one buffer: fn may not keep one.
func eachBase64Segment(s string, fn func(seg []byte) bool) bool {
	var out []byte
	for _, raw := range []string{s, url.QueryEscape(s)} {
		buf := make([]byte, 2+len(raw)) // two zero bytes, then raw
		copy(buf[2:], raw)
		for k := 0; k < 3; k++ {
			in := buf[2-k:]         // k bytes before raw
			first := (8*k + 5) / 6  // first character made of s's bits only
			last := 8 * len(in) / 6 // characters before this are complete
			for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
				out = enc.AppendEncode(out[:0], in)
				if first < last && last <= len(out) && fn(out[first:last]) {
					return true
				}
			}
		}
	}
	return false
}
