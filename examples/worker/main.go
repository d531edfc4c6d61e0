// Command worker stands in for an integration's worker run by Vault Agent's exec
// mode (examples/agent/exec.hcl): Agent starts it with the iAdvize token in its
// environment and restarts it with the new token after each rotation.
//
// At start it writes one line to standard output (which the Agent config sends to
// a log file):
//
//	worker started pid=1234 token=sha256:3f2a9c1d07be
//
// naming a short SHA-256 of the token it was given, never the token, so that a
// log reader can tell rotations apart. It then waits until SIGTERM or SIGINT
// (Agent's restart_stop_signal), writes "worker stopping pid=1234" and exits 0.
// Without a token it writes "worker refused to start" and exits 1.
//
// Usage: worker [-env NAME]   (NAME defaults to IADVIZE_TOKEN)
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	env := flag.String("env", "IADVIZE_TOKEN", "environment variable holding the access token")
	flag.Parse()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Getenv(*env), *env, os.Getpid(), os.Stdout, stop))
}

// run records the token it was started with and waits for a stop signal. It
// returns the exit code.
func run(token, envName string, pid int, out io.Writer, stop <-chan os.Signal) int {
	if token == "" {
		fmt.Fprintf(out, "worker refused to start pid=%d: %s is empty or unset\n", pid, envName)
		return 1
	}
	fmt.Fprintf(out, "worker started pid=%d token=sha256:%s\n", pid, Fingerprint(token))
	// A real worker would call the iAdvize API here with
	// "Authorization: Bearer $IADVIZE_TOKEN" until it is stopped.
	<-stop
	fmt.Fprintf(out, "worker stopping pid=%d\n", pid)
	return 0
}

// Fingerprint is the first 12 hex digits of the token's SHA-256: enough to tell
// tokens apart in a log, useless to call an API with.
func Fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}
