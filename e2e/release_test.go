package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// hostPlatform is the os_arch of this machine, as release archives name it.
var hostPlatform = runtime.GOOS + "_" + runtime.GOARCH

// testVersions are the versions the end-to-end tests release, in the order
// they are built (the upgrade test moves a mount from the first to the second
// and back).
var testVersions = []string{"v0.2.0", "v0.3.0"}

// releases holds the host-platform release that scripts/release.sh built for
// this test process: testVersions one after the other into one OUT_DIR, as an
// operator's two runs of make release fill build/release (building one takes
// seconds with a warm cache, minutes without). It is shared by the tests that
// need it and is not changed once built.
var releases struct {
	once sync.Once
	root string // removed by TestMain
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if releases.root != "" {
		os.RemoveAll(releases.root)
	}
	os.Exit(code)
}

// releaseDir returns the OUT_DIR into which scripts/release.sh, run from the
// repository for the host platform, built every version of testVersions,
// building it on first use.
func releaseDir(t *testing.T) string {
	t.Helper()
	src := vaulttest.RepoRoot(t)
	releases.once.Do(func() {
		root, err := os.MkdirTemp("", "e2e-releases-")
		if err != nil {
			releases.err = err
			return
		}
		releases.root, releases.dir = root, filepath.Join(root, "release")
		changelog := filepath.Join(root, "CHANGELOG.md")
		if err := os.WriteFile(changelog, []byte(testChangelog()), 0o644); err != nil {
			releases.err = err
			return
		}
		for _, v := range testVersions {
			err := runRelease(src, releases.dir, v, hostPlatformPair(), "CHANGELOG_FILE="+changelog)
			if err != nil {
				releases.err = err
				return
			}
		}
	})
	if releases.err != nil {
		t.Fatal(releases.err)
	}
	return releases.dir
}

// testChangelog is a changelog with an entry for each of testVersions: the
// test releases are not the project's, so they are not in CHANGELOG.md, which
// scripts/release.sh reads unless CHANGELOG_FILE names another.
func testChangelog() string {
	var b strings.Builder
	b.WriteString("# Changelog\n\n## [Unreleased]\n")
	for i := len(testVersions) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "\n## [%s] - 2026-12-0%d\n\n- A release of the end-to-end tests.\n", testVersions[i], i+1)
	}
	return b.String()
}

// hostPlatformPair is hostPlatform as PLATFORMS spells it (os/arch).
func hostPlatformPair() string { return strings.Replace(hostPlatform, "_", "/", 1) }

// runRelease runs scripts/release.sh of the source tree src, with env added to
// the environment.
func runRelease(src, outDir, version, platforms string, env ...string) error {
	out, err := releaseScript(src, outDir, version, platforms, env...)
	if err != nil {
		return fmt.Errorf("scripts/release.sh %s in %s: %v\n%s", version, src, err, out)
	}
	return nil
}

// releaseScript runs scripts/release.sh of src and returns its output.
func releaseScript(src, outDir, version, platforms string, env ...string) (string, error) {
	cmd := exec.Command("bash", filepath.Join(src, "scripts", "release.sh"), version)
	cmd.Dir = src
	cmd.Env = append(append(scriptEnv(), "OUT_DIR="+outDir, "PLATFORMS="+platforms), env...)
	started := time.Now()
	out, err := cmd.CombinedOutput()
	if d := time.Since(started); err == nil && d > time.Minute {
		fmt.Fprintf(os.Stderr, "e2e: scripts/release.sh %s took %s (a cold build cache)\n", version, d.Round(time.Second))
	}
	return string(out), err
}

// TestReleaseReproducible: a second run of scripts/release.sh, on a copy of
// the source in another directory, gives the same bytes as the shared
// release's run for that version; SHA256SUMS lists every file the release
// holds, with its sum; each archive holds only the binary, with fixed owner,
// mode and time; the binary carries its version and no build path or VCS
// stamp. The release make release wrote into build/release, if any, is
// checked the same way, every platform and version of it.
func TestReleaseReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release: skipped with -short")
	}
	t.Parallel()
	version := testVersions[0]
	a := releaseDir(t)
	b := filepath.Join(t.TempDir(), "release")
	changelog := writeFile(t, t.TempDir(), "CHANGELOG.md", testChangelog())
	if err := runRelease(copySource(t), b, version, hostPlatformPair(), "CHANGELOG_FILE="+changelog); err != nil {
		t.Fatal(err)
	}
	filesA, filesB := versionFiles(checkSums(t, a), version), checkSums(t, b)
	if strings.Join(filesA, " ") != strings.Join(filesB, " ") {
		t.Fatalf("the two releases of %s hold different files: %v and %v", version, filesA, filesB)
	}
	for _, f := range filesA {
		x, errA := os.ReadFile(filepath.Join(a, f))
		y, errB := os.ReadFile(filepath.Join(b, f))
		if errA != nil || errB != nil {
			t.Fatalf("%s: %v %v", f, errA, errB)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds of the same source", f)
		}
	}
	if sumsA, sumsB := sumLines(t, a, version), sumLines(t, b, version); sumsA != sumsB {
		t.Errorf("SHA256SUMS lines of %s differ between two builds:\n%s\n%s", version, sumsA, sumsB)
	}
	for _, v := range testVersions {
		checkRelease(t, a, v, []string{hostPlatform})
	}

	// What make release wrote, if it ran: all four platforms.
	made := filepath.Join(vaulttest.RepoRoot(t), "build", "release")
	if _, err := os.Stat(filepath.Join(made, "SHA256SUMS")); err == nil {
		files := checkSums(t, made)
		t.Logf("build/release: SHA256SUMS matches its %d files", len(files))
	} else {
		t.Logf("no build/release (make release VERSION=... writes one): only the test's builds were checked")
	}
}

// isVersionFile reports whether name, as SHA256SUMS names it, is a file of
// version: PLATFORM/PLUGIN_VERSION or PLUGIN_VERSION_PLATFORM.tar.gz.
func isVersionFile(name, version string) bool {
	bin := vaulttest.PluginName + "_" + version
	dir, base, ok := strings.Cut(name, "/")
	if ok {
		return base == bin && !strings.Contains(dir, "/")
	}
	platform, ok := strings.CutSuffix(strings.TrimPrefix(name, bin+"_"), ".tar.gz")
	return ok && strings.HasPrefix(name, bin+"_") && strings.Count(platform, "_") == 1
}

// versionFiles returns the names of version's files among names.
func versionFiles(names []string, version string) []string {
	var out []string
	for _, n := range names {
		if isVersionFile(n, version) {
			out = append(out, n)
		}
	}
	return out
}

// sumLines returns the lines of dir/SHA256SUMS naming version's files.
func sumLines(t *testing.T, dir, version string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if _, name, ok := strings.Cut(line, "  "); ok && isVersionFile(name, version) {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// checkSums checks that dir/SHA256SUMS lists every other file of dir, each
// with its sha256, and returns the listed files, sorted.
func checkSums(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]string{}
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 || name == "" {
			t.Fatalf("%s/SHA256SUMS: malformed line %q", dir, sc.Text())
		}
		if _, dup := listed[name]; dup {
			t.Fatalf("%s/SHA256SUMS lists %s twice", dir, name)
		}
		listed[name] = sum
		names = append(names, name)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("%s/SHA256SUMS is not sorted by name: %v", dir, names)
	}
	var found []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "SHA256SUMS" {
			return nil
		}
		found = append(found, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(found)
	if strings.Join(found, " ") != strings.Join(names, " ") {
		t.Fatalf("%s: SHA256SUMS lists %v, the directory holds %v", dir, names, found)
	}
	for _, name := range names {
		if got := vaulttest.SHA256(t, filepath.Join(dir, name)); got != listed[name] {
			t.Errorf("%s/%s: sha256 %s, SHA256SUMS says %s", dir, name, got, listed[name])
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: empty release", dir)
	}
	return names
}

// checkRelease checks the layout of a release of version for platforms: per
// platform a binary PLATFORM/vault-plugin-secrets-iadvize_VERSION, stamped with
// the version, and an archive holding only it, with fixed metadata.
func checkRelease(t *testing.T, dir, version string, platforms []string) {
	t.Helper()
	bin := vaulttest.PluginName + "_" + version
	for _, p := range platforms {
		binPath := filepath.Join(dir, p, bin)
		want, err := os.ReadFile(binPath)
		if err != nil {
			t.Fatalf("release %s: %v", p, err)
		}
		// With -trimpath, Go records no -ldflags in the build info: the version
		// stamp is checked in the bytes here, and by Vault in the upgrade test
		// (it refuses a binary that reports another version than registered).
		info, err := exec.Command("go", "version", "-m", binPath).Output()
		if err != nil {
			t.Fatalf("go version -m %s: %v", binPath, err)
		}
		for _, w := range []string{"-trimpath=true", "CGO_ENABLED=0"} {
			if !bytes.Contains(info, []byte(w)) {
				t.Errorf("%s: build info lacks %q:\n%s", binPath, w, info)
			}
		}
		if bytes.Contains(info, []byte("vcs.")) {
			t.Errorf("%s: build info carries a VCS stamp:\n%s", binPath, info)
		}
		if id, err := exec.Command("go", "tool", "buildid", binPath).Output(); err != nil || strings.TrimSpace(string(id)) != "" {
			t.Errorf("%s: build ID %q (%v), want none", binPath, id, err)
		}
		if !bytes.Contains(want, []byte(version)) {
			t.Errorf("%s does not hold its version %s", binPath, version)
		}
		if bytes.Contains(want, []byte(vaulttest.RepoRoot(t))) {
			t.Errorf("%s holds the build directory's path", binPath)
		}

		archive := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.tar.gz", vaulttest.PluginName, version, p))
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		if zr.Name != "" || !zr.ModTime.IsZero() {
			t.Errorf("%s: gzip header holds a name %q or time %v", archive, zr.Name, zr.ModTime)
		}
		tr := tar.NewReader(zr)
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		if h.Name != bin || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" ||
			!h.ModTime.Equal(time.Unix(0, 0)) || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: entry %q mode %o uid %d gid %d uname %q gname %q mtime %v: want %s 755 0 0 and time 0",
				archive, h.Name, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime, bin)
		}
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the archived binary is not %s", archive, binPath)
		}
		if _, err := tr.Next(); err != io.EOF {
			t.Errorf("%s holds more than the binary (%v)", archive, err)
		}
	}
}

// releaseSum is the sha256 SHA256SUMS gives for name.
func releaseSum(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if sum, n, ok := strings.Cut(line, "  "); ok && n == name {
			return sum
		}
	}
	t.Fatalf("%s/SHA256SUMS has no %s", dir, name)
	return ""
}

// stubGo writes a stand-in for the go command into dir and returns its path:
// `version` prints a version line, `build ... -o OUT` writes OUT (its
// arguments, the platform and $STUB_TAG: different bytes per version and tag)
// in seconds rather than a compiler's minutes, and each call is appended to
// dir/calls. For the tests of what scripts/release.sh does around the build.
func stubGo(t *testing.T, dir string) string {
	t.Helper()
	calls := filepath.Join(dir, "calls")
	path := writeFile(t, dir, "go", `#!/usr/bin/env bash
echo "$*" >>`+shellQuote(calls)+`
case "$1" in
version) echo "go version go0.0-stub $(uname -s)/$(uname -m)" ;;
build)
  out= args=("$@")
  while [ $# -gt 0 ]; do if [ "$1" = -o ]; then out=$2; shift; fi; shift; done
  printf '%s\n' "${args[@]}" "$GOOS/$GOARCH" "${STUB_TAG:-}" >"$out" ;;
*) exit 2 ;;
esac
`)
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// shellQuote quotes s for bash.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestReleaseKeepsOtherVersions: runs of scripts/release.sh (with a stand-in
// for the compiler) into one OUT_DIR add their version and keep the others'
// files and SHA256SUMS lines, as the README's Downgrade needs after two make
// release runs; building a version again replaces all of its files (a platform
// left out of the new run is gone) and no other version's, not even one whose
// name starts the same (v0.2.0-rc.1 beside v0.2.0).
func TestReleaseKeepsOtherVersions(t *testing.T) {
	t.Parallel()
	tools := t.TempDir()
	goStub := stubGo(t, tools)
	changelog := writeFile(t, tools, "CHANGELOG.md",
		"# Changelog\n\n## [Unreleased]\n\n## [v0.3.0] - 2026-12-02\n\n## [v0.2.0] - 2026-12-01\n\n## [v0.2.0-rc.1]\n")
	src, out := vaulttest.RepoRoot(t), filepath.Join(t.TempDir(), "release")
	build := func(version, platforms, tag string) {
		t.Helper()
		if err := runRelease(src, out, version, platforms, "GO="+goStub, "CHANGELOG_FILE="+changelog, "STUB_TAG="+tag); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := func(version string) map[string]string {
		t.Helper()
		files := map[string]string{}
		for _, f := range versionFiles(checkSums(t, out), version) {
			files[f] = vaulttest.SHA256(t, filepath.Join(out, f))
		}
		return files
	}
	build("v0.2.0-rc.1", "linux/amd64", "rc")
	build("v0.2.0", "linux/amd64 darwin/arm64", "first")
	build("v0.3.0", "linux/amd64", "first")
	rc, v2, v3 := snapshot("v0.2.0-rc.1"), snapshot("v0.2.0"), snapshot("v0.3.0")
	if len(rc) != 2 || len(v2) != 4 || len(v3) != 2 {
		t.Fatalf("after three runs: %d files of v0.2.0-rc.1, %d of v0.2.0, %d of v0.3.0; want 2, 4 and 2", len(rc), len(v2), len(v3))
	}
	if n := len(checkSums(t, out)); n != 8 {
		t.Fatalf("SHA256SUMS lists %d files, want the 8 of the three versions", n)
	}

	build("v0.2.0", "linux/amd64", "second") // again, one platform, other bytes
	if got := snapshot("v0.2.0-rc.1"); fmt.Sprint(got) != fmt.Sprint(rc) {
		t.Errorf("rebuilding v0.2.0 changed v0.2.0-rc.1's files: %v, were %v", got, rc)
	}
	if got := snapshot("v0.3.0"); fmt.Sprint(got) != fmt.Sprint(v3) {
		t.Errorf("rebuilding v0.2.0 changed v0.3.0's files: %v, were %v", got, v3)
	}
	got := snapshot("v0.2.0")
	if len(got) != 2 {
		t.Errorf("v0.2.0 rebuilt for linux/amd64 alone: %d files %v, want its 2", len(got), got)
	}
	for f, sum := range got {
		if v2[f] == sum {
			t.Errorf("%s was not replaced by the rebuild", f)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "darwin_arm64")); !os.IsNotExist(err) {
		t.Errorf("darwin_arm64/ is still there after v0.2.0, its only version, was rebuilt without it (%v)", err)
	}
}

// TestReleaseNeedsChangelogEntry: make release, and scripts/release.sh, refuse
// a version that CHANGELOG.md has no section for, with a message naming the
// file, the version and the heading to add, before building anything; the
// repository's CHANGELOG.md has an Unreleased section and one for v0.1.0,
// which the script accepts.
func TestReleaseNeedsChangelogEntry(t *testing.T) {
	t.Parallel()
	tools := t.TempDir()
	goStub := stubGo(t, tools)
	src := vaulttest.RepoRoot(t)

	out := filepath.Join(t.TempDir(), "release")
	text, err := releaseScript(src, out, "v9.8.7", hostPlatformPair(), "GO="+goStub)
	if err == nil {
		t.Fatalf("scripts/release.sh v9.8.7 succeeded with no changelog entry:\n%s", text)
	}
	for _, want := range []string{"CHANGELOG.md has no entry for v9.8.7", `"## [v9.8.7] - `} {
		if !strings.Contains(text, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, text)
		}
	}
	if _, err := os.Stat(filepath.Join(tools, "calls")); !os.IsNotExist(err) {
		t.Errorf("the go command ran before the changelog was checked (%v)", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("OUT_DIR was created for a refused version (%v)", err)
	}

	if err := runRelease(src, out, "v0.1.0", hostPlatformPair(), "GO="+goStub); err != nil {
		t.Errorf("CHANGELOG.md's own v0.1.0: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(src, "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^## \[Unreleased\]$`).Match(b) {
		t.Errorf("CHANGELOG.md has no \"## [Unreleased]\" section")
	}

	// make release, as an operator types it, in a clean copy of the tree.
	copied := copySource(t)
	cmd := exec.Command("make", "-s", "release", "VERSION=v9.8.7", "GO="+goStub)
	cmd.Dir = copied
	cmd.Env = scriptEnv()
	made, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(made), "CHANGELOG.md has no entry for v9.8.7") {
		t.Errorf("make release VERSION=v9.8.7: %v, want a refusal naming CHANGELOG.md:\n%s", err, made)
	}
	if _, err := os.Stat(filepath.Join(copied, "build", "release")); !os.IsNotExist(err) {
		t.Errorf("make release of a version with no changelog entry created build/release (%v)", err)
	}
}
