// Command consumer is an example integration. It reads its iAdvize token from
// a Vault path (creds/<role> or static-creds/<role>; VAULT_ADDR, VAULT_TOKEN)
// and calls the API with it. On a 401 it writes refused_token_sha256 (the
// token's hex SHA-256) to the same path, which needs "update" in its policy,
// and calls again at once with the token of the answer. It never reports a
// token twice; a token refused again makes it wait -interval and read afresh.
// It prints SHA-256 fingerprints, never a token, and ends with a line
//
//	consumer done: calls=10 ok=10 failed=0 refused=1 reported=1 reads=1
//
// exiting 0 when every call succeeded within -tries attempts, 1 otherwise.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

func main() {
	c := &consumer{http: &http.Client{Timeout: 10 * time.Second}, out: os.Stdout, sleep: sleep}
	flag.StringVar(&c.path, "path", "iadvize/static-creds/crm-sync", "Vault `path` of the token: creds/<role> or static-creds/<role>")
	flag.StringVar(&c.apiURL, "api", "", "API `URL` to GET with the token (required)")
	calls := flag.Int("calls", 1, "API calls to make")
	flag.DurationVar(&c.interval, "interval", time.Second, "pause between calls, and before re-reading a token refused again")
	flag.IntVar(&c.tries, "tries", 5, "attempts per call before it counts as failed")
	flag.Parse()
	if c.apiURL == "" || *calls < 1 || c.tries < 1 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if c.vault, err = vaultClient(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !c.run(ctx, *calls) {
		os.Exit(1)
	}
}

// vaultClient is the Vault client of the environment (VAULT_ADDR, VAULT_TOKEN,
// VAULT_CACERT...) minus its retries: the consumer's loop is the one retry
// loop, so that a report is sent once (the client would resend it on a 429).
func vaultClient() (*api.Client, error) {
	c, err := api.NewClient(api.DefaultConfig())
	if err == nil {
		c.SetMaxRetries(0)
	}
	return c, err
}

// consumer makes API calls with the token at a Vault path.
type consumer struct {
	vault        *api.Client
	path, apiURL string
	http         *http.Client
	interval     time.Duration
	tries        int
	out          io.Writer
	sleep        func(context.Context, time.Duration) error
	token        string   // "" until read, and when it must be read afresh
	reported     []string // the SHA-256 of each token reported

	ok, failed, refused, reads int
}

// run makes calls API calls, interval apart, prints the counts and reports
// whether every call succeeded.
func (c *consumer) run(ctx context.Context, calls int) bool {
	for i := 1; i <= calls; i++ {
		if i > 1 && c.sleep(ctx, c.interval) != nil {
			break
		}
		if err := c.call(ctx); err != nil {
			c.failed++
			fmt.Fprintf(c.out, "call %d failed: %v\n", i, err)
		} else {
			c.ok++
		}
	}
	fmt.Fprintf(c.out, "consumer done: calls=%d ok=%d failed=%d refused=%d reported=%d reads=%d\n",
		calls, c.ok, c.failed, c.refused, len(c.reported), c.reads)
	return c.ok == calls
}

// call makes one API call, in at most c.tries attempts c.interval apart. An
// attempt reads the token if need be, calls the API and, on a 401, reports
// the token (unless it was already) and calls again with the new one.
func (c *consumer) call(ctx context.Context) (err error) {
	for try := 1; try <= c.tries; try++ {
		if try > 1 && c.sleep(ctx, c.interval) != nil {
			return ctx.Err()
		}
		if c.token == "" {
			c.reads++
			if c.token, err = c.use(c.vault.Logical().ReadWithContext(ctx, c.path)); err != nil {
				continue
			}
		}
		refused := false
		if refused, err = c.get(ctx); !refused {
			return err
		}
		if hash := sha(c.token); !slices.Contains(c.reported, hash) {
			c.reported = append(c.reported, hash)
			data := map[string]any{"refused_token_sha256": hash}
			if c.token, err = c.use(c.vault.Logical().WriteWithContext(ctx, c.path, data)); err != nil {
				fmt.Fprintf(c.out, "report of token sha256:%s failed: %v\n", hash[:12], err)
				continue
			}
			fmt.Fprintf(c.out, "reported token sha256:%s to %s, got sha256:%s\n", hash[:12], c.path, sha(c.token)[:12])
			if refused, err = c.get(ctx); !refused {
				return err
			}
		}
		c.token = "" // refused again: wait, then read afresh
	}
	return err
}

// use takes the token of a read's (or a report's) answer.
func (c *consumer) use(s *api.Secret, err error) (string, error) {
	if err != nil {
		return "", err
	}
	if s == nil {
		return "", fmt.Errorf("nothing at %s", c.path)
	}
	for _, w := range s.Warnings {
		fmt.Fprintln(c.out, "vault warning:", w)
	}
	tok, _ := s.Data["access_token"].(string)
	if tok == "" {
		return "", fmt.Errorf("no access_token at %s", c.path)
	}
	return tok, nil
}

// get calls the API with the token; refused is true when it answers 401.
func (c *consumer) get(ctx context.Context) (refused bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.apiURL, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // a real integration reads its data
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		c.refused++
		return true, fmt.Errorf("the API refused token sha256:%s", sha(c.token)[:12])
	case resp.StatusCode/100 != 2:
		return false, fmt.Errorf("the API answered %s", resp.Status)
	}
	return false, nil
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sha is the hex SHA-256 of a token: what a report sends, and (its first 12
// digits) what a log may show.
func sha(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
