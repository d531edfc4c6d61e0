package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	iadvize "github.com/iadvize/vault-plugin-secrets-iadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// The targets of the restart run (BENCHMARKS.md, the 100,000-role section).
const (
	firstReadTarget  = 100 * time.Millisecond // unseal to the first token served
	runTarget        = 60 * time.Second       // longest periodic run
	vaultRunTimeout  = 90 * time.Second       // Vault cancels a periodic function after this
	heapPerRoleLimit = 1024                   // plugin live heap per role, bytes
	// The report spells these targets out: "< 100 ms", "≤ 60 s", "90 s", "< 1 KiB".
	// warmClients read every role once after the roles are written (a login each).
	warmClients = 64
	// coldReads: roles read one after the other after the restart, each a cache miss.
	coldReads = 1000
)

// refreshRun is one periodic run as the plugin logs it ("background refresh
// run", periodic.go, at debug level): when it ended (Vault's timestamp), how
// long it took, the roles it found due and the roles scheduled at its end (0
// while the schedule is not built).
type refreshRun struct {
	end            time.Time
	took           time.Duration
	due, scheduled int
}

// refreshRuns reads the periodic runs the Vault server's JSON log holds past
// offset, and how many stopped reading roles at their time budget.
func refreshRuns(logPath string, offset int64) (runs []refreshRun, cutShort int) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, 0
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, 0
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Contains(line, []byte("the run ended before every token state was read")) {
			cutShort++
		}
		if !bytes.Contains(line, []byte(`"background refresh run"`)) {
			continue
		}
		var e struct {
			Timestamp      time.Time `json:"@timestamp"`
			Took           string    `json:"took"`
			Due, Scheduled float64
		}
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		took, _ := time.ParseDuration(e.Took)
		runs = append(runs, refreshRun{end: e.Timestamp, took: took, due: int(e.Due), scheduled: int(e.Scheduled)})
	}
	return runs, cutShort
}

// liveHeap is this process's heap after a garbage collection.
func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// heapRun is the in-process measure of the restart run's plugin memory.
type heapRun struct {
	perRole      int64         // live heap per role, cache and schedule
	build, empty time.Duration // the first periodic run (builds the schedule); the median of five more (none due)
	scheduled    int
}

// inProcessHeap measures the plugin's live heap per role as it is after a
// restart and the first periodic run. A backend (iadvize.Factory, sdk
// framework) over logical.InmemStorage writes role r0 and logs it in at an
// in-process fake upstream, as the real run does; its stored records
// (roles/r0, tokens/r0) are copied to r1 … r{n-1}, each with its own username,
// password and token of the same lengths (n logins would take minutes: every
// login's budget record holds every principal of the last minute). A second
// backend on that storage, as after a restart, runs the periodic function (it
// builds the schedule from the token states), then reads every role once (each
// entry cached, as reads leave it). Live heap after GC before the run and after
// the reads, ÷ n: neither the storage nor the backend's fixed cost is counted. A read of the last role checks that a copy is served, without
// a login.
func inProcessHeap(t vaulttest.TB, n int) heapRun {
	up := fakeiadvize.New(fakeiadvize.Options{})
	srv := httptest.NewServer(up)
	defer func() { srv.Close(); up.Close() }()
	ctx := context.Background()
	storage := &logical.InmemStorage{}
	newBackend := func(logger hclog.Logger) logical.Backend {
		b, err := iadvize.Factory(ctx, &logical.BackendConfig{Logger: logger, StorageView: storage,
			System: &logical.StaticSystemView{DefaultLeaseTTLVal: 768 * time.Hour, MaxLeaseTTLVal: 768 * time.Hour}})
		must(t, err)
		return b
	}
	do := func(b logical.Backend, op logical.Operation, path string, data map[string]any) map[string]any {
		resp, err := b.HandleRequest(ctx, &logical.Request{Operation: op, Path: path, Data: data, Storage: storage})
		if err == nil && resp != nil && resp.IsError() {
			err = fmt.Errorf("%s %s: %v", op, path, resp.Error())
		}
		must(t, err)
		if resp == nil {
			return nil
		}
		return resp.Data
	}
	user := func(i int) string { return fmt.Sprintf("svc-iadvize-r%d@bench.example", i) } // as addRole names them
	pass := func(i int) string { return fmt.Sprintf("pw-r%d", i) }
	first := newBackend(hclog.NewNullLogger())
	do(first, logical.CreateOperation, "config", map[string]any{"token_url": srv.URL + "/oauth2/token", "verify_url": srv.URL + "/_authenticated",
		"logins_per_minute": 1_000_000, "user_logins_per_minute": 1_000_000})
	up.AddUser(user(0), pass(0))
	do(first, logical.CreateOperation, "roles/r0", map[string]any{"username": user(0), "password": pass(0)})
	tok, _ := do(first, logical.ReadOperation, "static-creds/r0", nil)["access_token"].(string)
	first.Cleanup(ctx)

	// clone copies a stored record of r0 to role i, replacing the quoted values.
	clone := func(key string, i int, repl map[string]string) {
		e, err := storage.Get(ctx, key+"r0")
		must(t, err)
		if e == nil {
			t.Fatalf("in process: nothing stored at %sr0", key)
		}
		v := e.Value
		for old, nu := range repl {
			if bytes.Count(v, []byte(`"`+old+`"`)) != 1 {
				t.Fatalf("in process: %sr0 does not hold one of the values to replace as a JSON string", key)
			}
			v = bytes.Replace(v, []byte(`"`+old+`"`), []byte(`"`+nu+`"`), 1)
		}
		must(t, storage.Put(ctx, &logical.StorageEntry{Key: fmt.Sprintf("%sr%d", key, i), Value: v, SealWrap: e.SealWrap}))
	}
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var last string // the last role's token
	for i := 1; i < n; i++ {
		nt := make([]byte, len(tok))
		for j := range nt {
			nt[j] = alnum[rand.IntN(len(alnum))]
		}
		last = string(nt)
		clone("roles/", i, map[string]string{user(0): user(i), pass(0): pass(i)})
		clone("tokens/", i, map[string]string{tok: last})
	}

	logf("restart: in process, the first periodic run of a new backend over %s stored roles, then a read of each", fmtInt(n))
	var logs bytes.Buffer // its debug lines (refreshRuns)
	b := newBackend(hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug, JSONFormat: true}))
	rollback := func() time.Duration {
		start := time.Now()
		do(b, logical.RollbackOperation, "", nil)
		return time.Since(start)
	}
	h0 := liveHeap()
	build := rollback()
	for i := range n { // every role read once: its entry cached, as reads leave it
		do(b, logical.ReadOperation, fmt.Sprintf("static-creds/r%d", i), nil)
	}
	h1 := liveHeap()
	var empties []float64
	for range 5 {
		empties = append(empties, float64(rollback()))
	}
	empty := time.Duration(median(empties))
	if got, _ := do(b, logical.ReadOperation, fmt.Sprintf("static-creds/r%d", n-1), nil)["access_token"].(string); got != last || up.Stats().LoginAttempts != 1 {
		t.Fatalf("in process: the copied role was not served its copied token without a login")
	}
	path := filepath.Join(t.TempDir(), "plugin.log")
	must(t, os.WriteFile(path, logs.Bytes(), 0o600))
	runs, _ := refreshRuns(path, 0)
	hr := heapRun{perRole: (h1 - h0) / int64(n), build: build, empty: empty}
	if len(runs) > 0 {
		hr.scheduled = runs[0].scheduled
	}
	return hr
}

// restartPhase writes opts.restartRoles roles, each holding a token, into one
// mount of a Vault server with file storage, restarts the server, and measures
// the first read after the unseal, the periodic runs that follow (the first
// builds the schedule from storage), the storage per role, and (in process,
// inProcessHeap) the plugin's heap per role.
func restartPhase(t *vaulttest.Program, opts options) section {
	n := opts.restartRoles
	sc := vaulttest.NewScope(t)
	defer sc.Close()
	logf("restart: starting a Vault server with file storage (debug log, JSON)")
	s, dataDir := vaulttest.StartFileStorage(sc, vaulttest.Options{PluginDir: pluginDir, LogLevel: "debug", Env: []string{"VAULT_LOG_FORMAT=json"}})
	unsealKey, _ := s.InitAndUnseal() // never printed
	s.RegisterPlugin()
	v := &vault{Server: s, dataDir: dataDir}
	f := startFake(sc, fakeiadvize.Options{})
	f.SetLimits(0, 0) // no upstream limits: every role logs in once
	v.mountIadvize(sc, "iadvize", f, map[string]any{"logins_per_minute": 1_000_000, "user_logins_per_minute": 1_000_000})
	token := v.benchToken(sc, "iadvize/*")
	pluginBase := rss(v.pluginPid(vaulttest.PluginName)) // the plugin with an empty mount
	mnt, err := v.Client.Sys().GetMount("iadvize")
	must(sc, err)
	mountDir := filepath.Join(dataDir, "logical", mnt.UUID)

	logf("restart: writing %s roles (%d writers)", fmtInt(n), roleWriters)
	writeTime, lat := v.writeRoles(sc, "iadvize", f, n)
	logf("restart: %s roles written in %s; reading each once (%d clients, a login each)", fmtInt(n), fmtDur(writeTime), warmClients)
	warm := newLoader(v.Addr, token, warmClients+10).attack(attack{paths: names("iadvize/static-creds/", n), conc: warmClients, n: n})
	if warm.Errors > 0 {
		sc.Fatalf("first reads of the roles: %d failed (first: %s)", warm.Errors, warm.FirstErr)
	}
	logins := f.Stats().LoginAttempts
	type prefixUsage struct {
		prefix string
		dirUsage
		dirs int64
	}
	var stored []prefixUsage
	var storedBytes, storedDisk int64
	for _, p := range []string{"roles", "tokens", "principals"} {
		u := prefixUsage{prefix: p + "/", dirUsage: usage(filepath.Join(mountDir, p))}
		u.dirs = countDirs(filepath.Join(mountDir, p))
		storedBytes, storedDisk = storedBytes+u.Bytes, storedDisk+u.DiskBytes+u.dirs*dirBlock
		stored = append(stored, u)
	}
	if stored[0].Files != int64(n) {
		sc.Fatalf("%s holds %d files, not one per role (%d): is the mount's storage elsewhere?", stored[0].prefix, stored[0].Files, n)
	}
	pluginBefore := rss(v.pluginPid(vaulttest.PluginName))
	during, duringCut := refreshRuns(v.LogPath, 0) // while the roles were written and logged in

	logf("restart: stopping and starting Vault")
	restart0 := time.Now()
	v.Stop()
	v.Restart()
	restartTook := time.Since(restart0)
	logAt := fileSize(v.LogPath)
	unseal0 := time.Now()
	st, err := v.Client.Sys().Unseal(unsealKey)
	must(sc, err)
	unsealed := time.Now()
	unsealTook := unsealed.Sub(unseal0)
	if st.Sealed {
		logf("restart: the unseal call returned with the server still sealed")
	}
	// The first read: one role, again and again until it is served.
	first := fmt.Sprintf("iadvize/static-creds/r%d", n/2)
	client := &http.Client{Timeout: 30 * time.Second}
	var attempts int
	var firstErr string
	var firstLat time.Duration
	for {
		req, _ := http.NewRequest(http.MethodGet, v.Addr+"/v1/"+first, nil)
		req.Header.Set("X-Vault-Token", token)
		t0 := time.Now()
		resp, err := client.Do(req)
		firstLat = time.Since(t0)
		attempts++
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if firstErr == "" {
			firstErr = err.Error() // a status or a transport error: no secret
		}
		if time.Since(unsealed) > 2*time.Minute {
			sc.Fatalf("no read served within 2 minutes of the unseal (first error: %s)", firstErr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	firstServed := time.Since(unsealed)
	logf("restart: first read served %s after the unseal returned", fmtDur(firstServed))
	// Cold reads of other roles, one at a time: each a cache miss.
	var coldPaths []string
	for _, i := range rand.Perm(n)[:min(coldReads, n-1)] {
		if i != n/2 {
			coldPaths = append(coldPaths, fmt.Sprintf("iadvize/static-creds/r%d", i))
		}
	}
	cold := newLoader(v.Addr, token, 4).attack(attack{paths: coldPaths, conc: 1, n: len(coldPaths)})
	loginsAfterReads := f.Stats().LoginAttempts - logins

	// The periodic runs: wait for the one that ends with the schedule built, and
	// one more. The CPU time of both processes is sampled every second meanwhile,
	// so that the runs' can be told apart.
	logf("restart: waiting for the periodic runs (Vault runs the periodic function about once a minute)")
	pid := v.pluginPid(vaulttest.PluginName)
	type cpuSample struct {
		at            time.Time
		vault, plugin time.Duration
	}
	var cpu []cpuSample
	var runs []refreshRun
	var cutShort int
	built := -1 // index of the first run that ended with every role scheduled
	deadline := unsealed.Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		cpu = append(cpu, cpuSample{time.Now(), cpuTime(v.Pid()), cpuTime(pid)})
		runs, cutShort = refreshRuns(v.LogPath, logAt)
		built = -1
		for i, r := range runs {
			if r.scheduled == n {
				built = i
				break
			}
		}
		if built >= 0 && len(runs) > built+1 {
			break
		}
		time.Sleep(time.Second)
	}
	pluginAfter := rss(pid)
	// The build: runs 1 … built+1 read every role from storage once between them
	// (a run cut short leaves what it read in the cache for the next). Their run
	// time, and their CPU time: each between the last sample before it began and
	// the first after it ended (a second of idle at most on each side).
	var build struct {
		took, wall, vault, plugin time.Duration
		ok                        bool
	}
	build.ok = built >= 0
	for _, r := range runs[:built+1] {
		var before, after *cpuSample
		for i := range cpu {
			if c := &cpu[i]; !c.at.After(r.end.Add(-r.took)) {
				before = c
			} else if after == nil && c.at.After(r.end) {
				after = c
			}
		}
		build.took += r.took
		if before == nil || after == nil {
			build.ok = false
			continue
		}
		build.wall, build.vault, build.plugin = build.wall+after.at.Sub(before.at), build.vault+after.vault-before.vault, build.plugin+after.plugin-before.plugin
	}
	loginsAfterRuns := f.Stats().LoginAttempts - logins
	sc.Close() // the server and the fake: the in-process measure wants a quiet process

	hr := inProcessHeap(t, n)

	// The report.
	var b strings.Builder
	fmt.Fprintf(&b, "One Vault server with `storage \"file\"`, one mount of %s roles, each with its own service user and its own\n"+
		"24-hour token (`refresh_before` 1 h, so none is due for the background refresh); the fake upstream's limits off,\n"+
		"`logins_per_minute` and `user_logins_per_minute` 1,000,000. Then Vault is stopped (SIGTERM), started and unsealed.\n"+
		"Periodic runs: the plugin's debug line \"background refresh run\" (its time, roles due, roles scheduled at its end),\n"+
		"from Vault's log. This section alone: `go run ./cmd/bench -phases restart -restart-roles %d -out FILE`.\n\n", fmtInt(n), n)

	var runRows [][]string
	longest := time.Duration(0)
	for i, r := range runs {
		what := "nothing due"
		switch {
		case i < built || built < 0:
			what = "schedule not built at its end"
		case i == built:
			what = "schedule built at its end"
		}
		if i > 0 && r.end.Add(-r.took).Sub(runs[i-1].end.Add(-runs[i-1].took)) > 90*time.Second {
			what += fmt.Sprintf("; Vault skipped a tick: run %d was still in flight", i)
		}
		runRows = append(runRows, []string{fmt.Sprint(i + 1), fmtDur(r.end.Add(-r.took).Sub(unsealed)), fmtDur(r.took), fmtInt(r.due), fmtInt(r.scheduled), what})
		longest = max(longest, r.took)
	}
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	firstRunBuilt := built == 0
	heapOK := hr.perRole < heapPerRoleLimit && hr.scheduled == n
	b.WriteString(table([]string{"target", "wanted", "measured", ""}, [][]string{
		{"first read after the restart: unseal returned → token served", "< 100 ms", fmtDur(firstServed), met(firstServed < firstReadTarget)},
		{"the schedule built within one run (the first after the restart)", "run 1", runName(built), met(firstRunBuilt)},
		{"no periodic run past 60 s", "≤ 60 s", fmt.Sprintf("longest %s of %d runs", fmtDur(longest), len(runs)),
			met(longest <= runTarget && len(runs) > 0)},
		{"plugin live heap per role (in process, cache and schedule)", "< 1 KiB", fmtBytes(hr.perRole), met(heapOK)},
	}))

	fmt.Fprintf(&b, "\n**Writing them.** %s role writes (%d writers, Vault API): %s, %.0f a second. Then each role read\n"+
		"once (`static-creds/`, %d clients, a login each at a fake upstream answering in %s): %s, %.0f a second;\n"+
		"%s logins. Role write latency by the number of roles already in the mount:\n\n",
		fmtInt(n), roleWriters, fmtDur(writeTime), float64(n)/writeTime.Seconds(), warmClients, upstreamLatency,
		fmtDur(warm.Elapsed), float64(n)/warm.Elapsed.Seconds(), fmtInt(logins))
	b.WriteString(writeCostTable(lat))

	fmt.Fprintf(&b, "\n**Storage per role** (the mount's files under `logical/<mount uuid>/`, as the file backend writes them: a JSON\n"+
		"entry holding the encrypted value in base64; a file or a directory takes at least one %s block on disk):\n\n", fmtBytes(dirBlock))
	var rows [][]string
	for _, u := range stored {
		rows = append(rows, []string{"`" + u.prefix + "`", fmtInt(u.Files), fmtInt(u.dirs), fmtBytes(u.Bytes), fmtBytes(u.DiskBytes + u.dirs*dirBlock),
			fmtBytes(u.Bytes / int64(n)), fmtBytes((u.DiskBytes + u.dirs*dirBlock) / int64(n))})
	}
	rows = append(rows, []string{"**all three**", "", "", fmtBytes(storedBytes), fmtBytes(storedDisk),
		"**" + fmtBytes(storedBytes/int64(n)) + "**", fmtBytes(storedDisk / int64(n))})
	b.WriteString(table([]string{"keys", "files", "directories", "bytes", "on disk", "bytes per role", "on disk per role"}, rows))

	fmt.Fprintf(&b, "\n**Restart.** Stop and start: %s until Vault answered (sealed). The unseal call took %s (it mounts\n"+
		"the plugin). The first read (`static-creds/r%d`, tried every 5 ms from the unseal's return) was served %s after\n"+
		"it, on try %d; that read itself took %s.", fmtDur(restartTook), fmtDur(unsealTook), n/2, fmtDur(firstServed), attempts, fmtDur(firstLat))
	if attempts > 1 {
		fmt.Fprintf(&b, " The tries before it were refused (first: `%s`).", firstErr)
	}
	fmt.Fprintf(&b, "\nThen %s other roles read one at a time, each a cache miss (two storage reads): p50 / p99 / max\n"+
		"%s; %d errors. Logins at the fake upstream after the restart: %d after these reads, %d after the periodic\n"+
		"runs below (expected 0: every token is in storage).\n\n", fmtInt(cold.Reads+cold.Errors), pct3(cold.Lat), cold.Errors, loginsAfterReads, loginsAfterRuns)

	b.WriteString("**Periodic runs after the restart** (start = end − its time, from the unseal's return; Vault cancels a\n" +
		"run after 90 s, the plugin starts no login and reads no more token states after 45 s; a build cut short keeps\n" +
		"what it read, and the next run goes on from there):\n\n")
	b.WriteString(table([]string{"run", "started after the unseal", "took", "due", "scheduled at its end", ""}, runRows))
	switch {
	case built >= 0:
		which := "Run 1"
		if built > 0 {
			which = fmt.Sprintf("Runs 1 to %d", built+1)
		}
		fmt.Fprintf(&b, "\n%s read the %s roles from storage in %s of run time, %.0f a second (%.0f µs a role); the\n"+
			"schedule was ready %s after the unseal.", which, fmtInt(n), fmtDur(build.took), float64(n)/build.took.Seconds(),
			float64(build.took.Microseconds())/float64(n), fmtDur(runs[built].end.Sub(unsealed)))
		if build.ok {
			perRole := func(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Microseconds())/float64(n)) }
			fmt.Fprintf(&b, " CPU time over those runs (/proc, sampled a second apart, %s of wall time\n"+
				"around them): Vault %s, the plugin %s; per role: Vault %s, plugin %s (in process, without Vault, the same\n"+
				"build takes %s a role).", fmtDur(build.wall), fmtDur(build.vault), fmtDur(build.plugin), perRole(build.vault),
				perRole(build.plugin), perRole(hr.build))
		}
	default:
		b.WriteString("\nNo run ended with every role scheduled within 10 minutes of the unseal.")
	}
	if cutShort > 0 {
		fmt.Fprintf(&b, " %d run(s) stopped reading token states at the run's 45 s (\"the run ended before every token state was read\").", cutShort)
	}
	if len(during) > 0 {
		var longestDuring time.Duration
		var mostDue int
		for _, r := range during {
			longestDuring, mostDue = max(longestDuring, r.took), max(mostDue, r.due)
		}
		fmt.Fprintf(&b, "\n\nBefore the restart, while the roles were written and logged in, Vault ran the periodic function %d times: %d\n"+
			"stopped reading token states at 45 s, the longest took %s, and the most roles one found due was %s (a role whose token\n"+
			"was stored while a build ran is checked again by the next run).", len(during), duringCut, fmtDur(longestDuring), fmtInt(mostDue))
	}

	fmt.Fprintf(&b, "\n\n**Plugin memory.** In process (`inProcessHeap`, `cmd/bench/restart.go`): a backend over\n"+
		"`logical.InmemStorage` writes role r0 and logs it in at the fake upstream; its stored records are copied to %s\n"+
		"roles, each with its own username, password and token of the same lengths. A second backend on that storage, as\n"+
		"after a restart, runs the periodic function, which builds the schedule from the token states (%s in\n"+
		"process, %s roles scheduled), then reads every role once (each entry cached). Live heap after GC before the run\n"+
		"and after the reads ÷ roles: **%s per role** (the login budget windows, empty a minute after the last login, not included). A run with none due (median of 5):\n"+
		"%s. The real plugin process's RSS: %s with the mount empty, %s after the logins, %s after the restart and\n"+
		"the runs above, %s per role over the empty mount's (RSS also counts garbage not yet returned).\n",
		fmtInt(n), fmtDur(hr.build), fmtInt(hr.scheduled), fmtBytes(hr.perRole), fmtDur(hr.empty),
		fmtBytes(pluginBase), fmtBytes(pluginBefore), fmtBytes(pluginAfter), fmtBytes((pluginAfter-pluginBase)/int64(n)))
	return section{order: 45, title: fmt.Sprintf("%s roles on file storage: writing, restart, background refresh", fmtInt(n)), body: b.String()}
}

// runName names the periodic run at index i ("none" when i < 0).
func runName(i int) string {
	if i < 0 {
		return "none within 10 min"
	}
	return fmt.Sprintf("run %d", i+1)
}

// dirBlock is the disk space of a small directory (ext4: one block).
const dirBlock = 4096

// countDirs counts the directories under dir, dir excluded.
func countDirs(dir string) (n int64) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != dir {
			n++
		}
		return nil
	})
	return n
}

// fileSize is a file's size, 0 when it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
