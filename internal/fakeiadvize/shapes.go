package fakeiadvize

import (
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The answer shapes: how a token-endpoint answer is written (reply), the
// upstream's success and error bodies, and the answer of every fault but hang.

// reply is a token-endpoint answer decided under the mutex and written after
// it is released, so a slow client never holds the fake up.
type reply struct {
	status     int
	retryAfter string // Retry-After header, "" for none
	wwwAuth    string // WWW-Authenticate header, "" for none
	location   string // Location header, "" for none
	// raw, when non-nil, is the body as is, sent with contentType ("" for no
	// Content-Type header at all). Otherwise body is sent as JSON.
	raw         []byte
	contentType string
	body        any
	outcome     string // for the log line
}

func (rp reply) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if rp.retryAfter != "" {
		h.Set("Retry-After", rp.retryAfter)
	}
	if rp.wwwAuth != "" {
		h.Set("WWW-Authenticate", rp.wwwAuth)
	}
	if rp.location != "" {
		h.Set("Location", rp.location)
	}
	if rp.raw != nil {
		if rp.contentType != "" {
			h.Set("Content-Type", rp.contentType)
		} else {
			h["Content-Type"] = nil // no header, and no sniffing either
		}
		w.WriteHeader(rp.status)
		_, _ = w.Write(rp.raw)
		return
	}
	writeJSON(w, rp.status, rp.body)
}

// jsonBytes is v as writeJSON sends it.
func jsonBytes(v any) []byte {
	b, _ := json.Marshal(v) // only the fake's own plain structs: cannot fail
	return append(b, '\n')
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError is the upstream's error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// tokenResponse is the upstream's success body; omitempty lets faults leave
// fields out. ExpiresIn is a number (int64 or float64) or a string, nil for
// none.
type tokenResponse struct {
	AccessToken  string `json:"access_token,omitempty"`
	ExpiresIn    any    `json:"expires_in,omitempty"`
	TokenType    string `json:"token_type,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Pad          string `json:"pad,omitempty"`
}

func errorReply(status int, code, desc, outcome string) reply {
	return reply{status: status, body: oauthError{code, desc}, outcome: outcome}
}

const (
	htmlErrorPage = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" +
		"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	htmlOKPage = "<!DOCTYPE html>\n<html><head><title>iAdvize</title></head>\n" +
		"<body><h1>Maintenance</h1><p>We will be back shortly.</p></body></html>\n"
)

// echoPrefix is the text before the secret in the echo faults' error
// description: EchoPrefixLen characters, long enough that cutting a message
// at 200 characters still leaves part of the secret in it.
var echoPrefix = func() string {
	const text = "The provided authorization grant is invalid, expired or revoked, or does not " +
		"match the client it was issued to. Check the submitted credentials and try again; submitted value: "
	return (text + strings.Repeat(".", EchoPrefixLen))[:EchoPrefixLen]
}()

// faultReplyLocked builds the answer of every fault but hang, to req.
func (s *Server) faultReplyLocked(f Fault, req tokenRequest) reply {
	outcome := "injected " + string(f.Mode)
	switch f.Mode {
	case FaultRateLimit, FaultRateLimitNoRetry:
		s.stats.InjectedRateLimited++
		rp := errorReply(http.StatusTooManyRequests, "too_many_requests", "too many requests, retry later", outcome)
		if f.Mode == FaultRateLimit {
			rp.retryAfter = strconv.Itoa(orDefault(f.RetryAfter, DefaultRetryAfter))
		}
		return rp
	}

	s.stats.InjectedFaults++
	switch f.Mode {
	case FaultServerError:
		status := orDefault(f.Status, DefaultErrorStatus)
		if f.PlainText {
			return reply{status: status, contentType: "text/plain; charset=utf-8",
				raw: []byte(http.StatusText(status) + "\n"), outcome: outcome}
		}
		return errorReply(status, "server_error", "the server encountered an unexpected error", outcome)
	case FaultUnavailableRetryAfter:
		rp := errorReply(orDefault(f.Status, DefaultErrorStatus), "temporarily_unavailable",
			"the service is temporarily unavailable, retry later", outcome)
		rp.retryAfter = strconv.Itoa(orDefault(f.RetryAfter, DefaultRetryAfter))
		return rp
	case FaultRedirect:
		return reply{status: orDefault(f.Status, DefaultRedirectStatus), location: f.Location,
			contentType: "text/html; charset=utf-8",
			raw:         []byte(`<a href="` + html.EscapeString(f.Location) + `">Moved</a>.` + "\n"), outcome: outcome}
	case FaultHTML:
		return reply{status: http.StatusBadGateway, contentType: "text/html", raw: []byte(htmlErrorPage), outcome: outcome}
	case FaultHTML200:
		return reply{status: http.StatusOK, contentType: "text/html; charset=utf-8", raw: []byte(htmlOKPage), outcome: outcome}
	case FaultNoAccessToken:
		return reply{status: http.StatusOK, outcome: outcome,
			body: tokenResponse{ExpiresIn: int64(s.lifetime / time.Second), TokenType: "Bearer", RefreshToken: "none"}}
	case FaultError200Credentials:
		return reply{status: http.StatusOK, body: oauthError{Error: "incorrect_client_credentials"}, outcome: outcome}
	case FaultError200Temporary:
		return reply{status: http.StatusOK, body: oauthError{Error: "temporarily_unavailable"}, outcome: outcome}
	case FaultEchoSecret:
		return errorReply(http.StatusBadRequest, "invalid_grant", echoPrefix+req.secret, outcome)
	case FaultEchoSecretURLEncoded:
		return errorReply(http.StatusBadRequest, "invalid_grant", echoPrefix+url.QueryEscape(req.secret), outcome)
	case FaultEchoSecretBase64:
		return errorReply(http.StatusBadRequest, "invalid_grant",
			echoPrefix+base64.StdEncoding.EncodeToString([]byte(req.secret)), outcome)
	case FaultEchoSecretForm:
		body := url.Values{"error": {"invalid_grant"}, "error_description": {echoPrefix + req.secret}}
		return reply{status: http.StatusBadRequest, contentType: "application/x-www-form-urlencoded",
			raw: []byte(body.Encode()), outcome: outcome}
	}

	// The rest carry a real token, valid for the lifetime they advertise.
	lifetime := s.lifetime
	switch f.Mode {
	case FaultDecimalExpiresIn:
		lifetime = time.Duration(DecimalExpiresIn * float64(time.Second))
	case FaultStringExpiresIn:
		n, _ := strconv.Atoi(StringExpiresIn)
		lifetime = time.Duration(n) * time.Second
	case FaultHugeExpiresIn:
		lifetime = HugeExpiresIn * time.Second
	}
	tok, secs := s.issueLocked(s.now(), lifetime, req)
	body := tokenResponse{AccessToken: tok, ExpiresIn: secs, TokenType: "Bearer", RefreshToken: "none"}
	rp := reply{status: http.StatusOK, outcome: outcome}
	switch f.Mode {
	case FaultNoExpiresIn:
		body.ExpiresIn = nil
	case FaultZeroExpiresIn:
		body.ExpiresIn = int64(0)
	case FaultNegativeExpiresIn:
		body.ExpiresIn = int64(negativeExpiresIn)
	case FaultHugeBody:
		body.RefreshToken = ""
		body.Pad = strings.Repeat("x", HugeBodyPad)
	case FaultDecimalExpiresIn:
		body.ExpiresIn = DecimalExpiresIn
	case FaultStringExpiresIn:
		body.ExpiresIn = StringExpiresIn
	case FaultLowercaseTokenType, FaultUppercaseTokenType, FaultNoTokenType:
		body.TokenType = faultTokenTypes[f.Mode]
	case FaultJSONTextPlain, FaultJSONTextHTML, FaultJSONNoContentType, FaultJSONCharset:
		rp.contentType = faultContentTypes[f.Mode]
		rp.raw = jsonBytes(body)
		return rp
	case FaultJSONBOM:
		rp.contentType = "application/json"
		rp.raw = append([]byte("\xEF\xBB\xBF"), jsonBytes(body)...)
		return rp
	case FaultFormToken:
		rp.contentType = "application/x-www-form-urlencoded"
		rp.raw = []byte(url.Values{
			"access_token": {tok}, "expires_in": {strconv.FormatInt(secs, 10)},
			"token_type": {"Bearer"}, "refresh_token": {"none"},
		}.Encode())
		return rp
	}
	rp.body = body
	return rp
}

// The token_type of the token-type faults.
var faultTokenTypes = map[FaultMode]string{
	FaultLowercaseTokenType: "bearer",
	FaultUppercaseTokenType: "BEARER",
	FaultNoTokenType:        "",
}

// The Content-Type of the JSON-under-another-type faults; "" sends none.
var faultContentTypes = map[FaultMode]string{
	FaultJSONTextPlain:     "text/plain",
	FaultJSONTextHTML:      "text/html",
	FaultJSONNoContentType: "",
	FaultJSONCharset:       "application/json; charset=utf-8",
}
