// Command fake-iadvize serves the fake iAdvize OAuth2 token server of package
// fakeiadvize on a loopback address, for demos and out-of-process tests.
//
// Usage:
//
//	fake-iadvize -user alice:s3cret -client svc:secret -addr-file /tmp/fake.addr
//
// It prints "fake-iadvize listening on http://127.0.0.1:PORT" once ready,
// writes the same base URL to -addr-file if given, logs one line per request
// to stderr (never a secret or token) and stops on SIGINT or SIGTERM. Drive it
// at run time with the admin API under /_fake/ (see package fakeiadvize);
// -h lists the flags, the endpoints and how to point the plugin at it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "fake-iadvize:", err)
		os.Exit(1)
	}
}

// credential is one name:secret pair from the command line.
type credential struct{ name, secret string }

// credentialFlag collects a repeatable name:secret flag. Set never returns an
// error, because the flag package would quote the rejected value (and so the
// secret) in its message: the first problem is kept in err and reported after
// parsing, without the value.
type credentialFlag struct {
	flag  string
	creds []credential
	err   error
}

// String lists the names only, never the secrets.
func (c *credentialFlag) String() string {
	if c == nil {
		return ""
	}
	names := make([]string, len(c.creds))
	for i, cr := range c.creds {
		names[i] = cr.name
	}
	return strings.Join(names, ",")
}

func (c *credentialFlag) Set(v string) error {
	name, secret, ok := strings.Cut(v, ":")
	if (!ok || name == "" || secret == "") && c.err == nil {
		c.err = fmt.Errorf("-%s wants name:secret, with both parts non-empty (value not shown)", c.flag)
	}
	if ok {
		c.creds = append(c.creds, credential{name, secret})
	}
	return nil
}

// listFlag collects a repeatable flag of plain (non-secret) values.
type listFlag []string

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *listFlag) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*l = append(*l, v)
	return nil
}

// usage prints what -h shows: the flags, the endpoints, and an example.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, `Usage: fake-iadvize [flags]

An imitation of the iAdvize OAuth2 token server on a loopback address, for
demos and tests: users, clients, login rate limits, and faults injected at
run time. It never logs a secret or a token.

Flags:
`)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nEndpoints:\n")
	for _, ep := range fakeiadvize.Endpoints() {
		fmt.Fprintf(w, "  %-4s %-16s %s\n", ep.Method, ep.Path, ep.Description)
	}
	fmt.Fprint(w, "\nFault modes (POST /_fake/fault; see package fakeiadvize):\n")
	line := " "
	for _, m := range fakeiadvize.KnownFaultModes() {
		if len(line)+1+len(m) > 78 {
			fmt.Fprintln(w, line)
			line = " "
		}
		line += " " + string(m)
	}
	fmt.Fprintln(w, line)
	fmt.Fprint(w, `
Example (PORT is the one it prints once listening):
  fake-iadvize -user alice:ALICE_PASSWORD &
  vault write iadvize/config token_url=http://127.0.0.1:PORT/oauth2/token verify_url=http://127.0.0.1:PORT/_authenticated
  vault write iadvize/roles/app username=alice password=ALICE_PASSWORD
  vault read iadvize/creds/app
  curl -d '{"mode":"rate_limit","count":1,"retry_after":120}' http://127.0.0.1:PORT/_fake/fault
  curl -d '{"username":"alice"}' http://127.0.0.1:PORT/_fake/revoke     # alice's tokens now get 401
  go run ./examples/consumer -path iadvize/creds/app -api http://127.0.0.1:PORT/api/me   # an integration
`)
}

// run is main without the process globals, so it can be driven in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fake-iadvize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs) }
	listen := fs.String("listen", "127.0.0.1:0", "loopback `address` to listen on")
	lifetime := fs.Duration("token-lifetime", fakeiadvize.DefaultTokenLifetime, "lifetime of issued tokens (whole seconds)")
	userLimit := fs.Int("user-limit", fakeiadvize.DefaultUserLoginsPerMinute, "login attempts per username (or client_id) per minute; 0 disables")
	ipLimit := fs.Int("ip-limit", fakeiadvize.DefaultIPLoginsPerMinute, "login attempts per client IP per minute; 0 disables")
	block := fs.Duration("block", fakeiadvize.DefaultBlockDuration, "how long a username or IP over its limit is refused")
	addrFile := fs.String("addr-file", "", "write the base URL to this `path` once listening (removed on exit)")
	users := &credentialFlag{flag: "user"}
	clients := &credentialFlag{flag: "client"}
	fs.Var(users, "user", "password-grant user as `name:password` (repeatable)")
	fs.Var(clients, "client", "confidential client as `id:secret` (repeatable): client-credentials grant, or the client of a password grant")
	var publicClients listFlag
	fs.Var(&publicClients, "public-client", "public client (no secret) `id` for the password grant (repeatable)")
	basicAuth := fs.String("basic-auth", string(fakeiadvize.BasicAuthRaw),
		"`mode` of reading HTTP Basic client credentials: raw (exactly as written, as ICEYE-style servers do) or urlencoded (each half form-decoded, RFC 6749 §2.3.1)")
	requireClient := fs.Bool("require-client", false, "the password grant requires a client (client_id, and its secret for a confidential client), as standard OAuth2 servers do")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := errors.Join(users.err, clients.err, checkLoopback(*listen)); err != nil {
		return err
	}

	logger := log.New(stderr, "fake-iadvize: ", log.LstdFlags)
	fake := fakeiadvize.New(fakeiadvize.Options{Logger: logger})
	defer fake.Close()
	if err := fake.SetBasicAuth(fakeiadvize.BasicAuthMode(*basicAuth)); err != nil {
		return fmt.Errorf("-basic-auth: %w", err)
	}
	fake.SetRequireClient(*requireClient)
	fake.SetTokenLifetime(*lifetime)
	fake.SetLimits(*userLimit, *ipLimit)
	fake.SetBlockDuration(*block)
	for _, u := range users.creds {
		fake.AddUser(u.name, u.secret)
	}
	for _, c := range clients.creds {
		fake.AddClient(c.name, c.secret)
	}
	for _, id := range publicClients {
		fake.AddPublicClient(id)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	// "localhost" could in principle resolve elsewhere: check what we got.
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		return fmt.Errorf("refusing to serve on non-loopback address %s", ln.Addr())
	}
	baseURL := "http://" + ln.Addr().String()

	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if *addrFile != "" {
		if err := writeFileAtomic(*addrFile, baseURL); err != nil {
			_ = srv.Close()
			return err
		}
		defer os.Remove(*addrFile)
	}
	fmt.Fprintln(stdout, "fake-iadvize listening on", baseURL)
	logger.Printf("%d user(s), %d client(s), %d public client(s), token lifetime %s, limits %d/user %d/ip per minute, block %s, basic auth %s, require client %v",
		len(users.creds), len(clients.creds), len(publicClients), *lifetime, *userLimit, *ipLimit, *block, *basicAuth, *requireClient)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Print("shutting down")
	fake.Close() // answer requests held by the hang fault, so Shutdown does not wait on them
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// checkLoopback refuses listen addresses other than localhost and loopback
// IPs: the fake has no authentication and an admin API.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen: refusing non-loopback address %q (use 127.0.0.1, [::1] or localhost)", addr)
	}
	return nil
}

// writeFileAtomic writes content to a temporary file next to path and renames
// it into place, so a reader polling for path never sees a partial write.
func writeFileAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
