package iadvize

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// errColonInClientID: HTTP Basic as written cannot carry a user ID holding ':'
// (RFC 7617 §2); the server would split the client ID there.
var errColonInClientID = errors.New("client_id holds ':', which HTTP Basic cannot carry as written (RFC 7617 section 2); " +
	"set config client_auth to basic_urlencoded or post")

// newTokenRequest is the one place that builds a token request (RFC 6749 §4.3.2
// for the password grant, §4.4.2 for client credentials): a form-encoded POST
// with grant_type, the grant's credentials and the scope when set. A role's
// client (client_id with client_secret) is authenticated as clientAuth says; a
// client_id without a secret is a public client and goes in the body (§3.2.1).
// It returns errColonInClientID for a client that raw Basic cannot carry.
func newTokenRequest(ctx context.Context, tokenURL string, r *role, clientAuth clientAuthStyle) (*http.Request, error) {
	form := url.Values{}
	if r.GrantType == grantClientCredentials {
		form.Set("grant_type", grantClientCredentials)
	} else {
		form.Set("grant_type", grantPassword)
		form.Set("username", r.Username)
		form.Set("password", r.Password)
	}
	if scopes := strings.Fields(r.Scope); len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	var basic string
	switch {
	case r.ClientID == "":
	case r.ClientSecret == "":
		form.Set("client_id", r.ClientID)
	case clientAuth == clientAuthPost:
		form.Set("client_id", r.ClientID)
		form.Set("client_secret", r.ClientSecret)
	case clientAuth == clientAuthBasicURLEncoded:
		basic = basicCredentials(url.QueryEscape(r.ClientID), url.QueryEscape(r.ClientSecret))
	case strings.Contains(r.ClientID, ":"):
		return nil, errColonInClientID
	default:
		basic = basicCredentials(r.ClientID, r.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic != "" {
		req.Header.Set("Authorization", "Basic "+basic)
	}
	return req, nil
}

// basicCredentials is the token68 of HTTP Basic (RFC 7617 §2).
func basicCredentials(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}
