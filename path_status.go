package iadvize

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathStatusRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, cfg, e, resp, err := b.pathRole(ctx, req, d)
	if resp != nil || err != nil {
		return resp, err
	}
	st, now := e.state, b.now()
	bound, err := b.boundHost(ctx, req.Storage, e.role)
	if err != nil {
		return nil, err
	}
	waiting := bindingRefusal(bound, e.role, cfg)
	reportAt, reportOutcome := b.lastReport(name, st)

	nextLogin := b.plannedLogin(e, cfg, now)
	noLoginBefore := b.nextLogin(e, cfg, now)
	if !noLoginBefore.After(now) || noLoginBefore.Equal(farFuture) {
		noLoginBefore = time.Time{}
	}
	return &logical.Response{Data: map[string]any{
		"has_token":            st.alive(now),
		fieldIssueTime:         rfc3339(st.IssuedAt),
		fieldExpireTime:        rfc3339(st.ExpiresAt),
		"next_login":           rfc3339(ceilSecond(nextLogin)),
		"last_attempt":         rfc3339(st.LastAttempt),
		"last_outcome":         st.LastOutcome,
		"last_error":           st.LastError,
		"consecutive_failures": st.Failures,
		"no_login_before":      rfc3339(ceilSecond(noLoginBefore)),
		"credentials_rejected": e.rejectedUnder(cfg.config),
		"token_host":           bound,
		"waiting_for_credentials": func() string {
			if waiting == nil {
				return ""
			}
			return waiting.message(name)
		}(),
		"last_report":         rfc3339(reportAt),
		"last_report_outcome": reportOutcome,
	}}, nil
}

// rfc3339 renders a time for a response; the zero time as "".
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

const pathStatusHelpSynopsis = `Report a role's token and login health, without the token.`

const pathStatusHelpDescription = `
has_token             whether a token with time left is cached
issue_time            when the cached token was issued
expire_time           when it expires
next_login            when the engine plans its next login (empty while the
                      credentials are rejected)
last_attempt          when the last login was sent
last_outcome          success, rate_limited, credentials_rejected or upstream_error
last_error            what went wrong last, if anything
consecutive_failures  failures of that kind in a row
no_login_before       no login will be tried before this (backoff, budget, 429)
credentials_rejected  upstream refused the credentials: no login until they are
                      rewritten or rotate-role is called
token_host            where the credentials may be sent (scheme://host:port);
                      empty until the first login of credentials written with
                      no config stored
waiting_for_credentials  set when config token_url names another host: why no
                      login happens, and what to write
last_report           when a consumer last reported the cached token refused
                      (refused_token_sha256)
last_report_outcome   what it led to: verified_valid, dropped (then a login:
                      see last_outcome) or throttled
`
