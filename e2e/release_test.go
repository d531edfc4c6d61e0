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

// releases holds the host-platform releases built by scripts/release.sh for
// this test process, one per version, shared by the tests that need them
// (building one takes seconds with a warm cache, minutes without).
var releases struct {
	mu    sync.Mutex
	root  string
	built map[string]*releaseBuild
}

type releaseBuild struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	releases.mu.Lock()
	if releases.root != "" {
		os.RemoveAll(releases.root)
	}
	releases.mu.Unlock()
	os.Exit(code)
}

// release returns the OUT_DIR of `scripts/release.sh version` run from the
// repository for the host platform, building it on first use.
func release(t *testing.T, version string) string {
	t.Helper()
	releases.mu.Lock()
	if releases.built == nil {
		releases.built = map[string]*releaseBuild{}
		dir, err := os.MkdirTemp("", "e2e-releases-")
		if err != nil {
			releases.mu.Unlock()
			t.Fatal(err)
		}
		releases.root = dir
	}
	rb := releases.built[version]
	if rb == nil {
		rb = &releaseBuild{dir: filepath.Join(releases.root, version)}
		releases.built[version] = rb
	}
	releases.mu.Unlock()
	rb.once.Do(func() {
		rb.err = runRelease(vaulttest.RepoRoot(t), rb.dir, version, strings.Replace(hostPlatform, "_", "/", 1))
	})
	if rb.err != nil {
		t.Fatal(rb.err)
	}
	return rb.dir
}

// runRelease runs scripts/release.sh of the source tree src.
func runRelease(src, outDir, version, platforms string) error {
	cmd := exec.Command("bash", filepath.Join(src, "scripts", "release.sh"), version)
	cmd.Dir = src
	cmd.Env = append(scriptEnv(), "OUT_DIR="+outDir, "PLATFORMS="+platforms)
	started := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/release.sh %s in %s: %v\n%s", version, src, err, out)
	}
	if d := time.Since(started); d > time.Minute {
		fmt.Fprintf(os.Stderr, "e2e: scripts/release.sh %s took %s (a cold build cache)\n", version, d.Round(time.Second))
	}
	return nil
}

// TestReleaseReproducible: two runs of scripts/release.sh on the same source,
// from two different directories, give the same bytes; SHA256SUMS lists every
// file the release holds, with its sum; each archive holds only the binary,
// with fixed owner, mode and time; the binary carries its version and no build
// path or VCS stamp. The release make release wrote into build/release, if
// any, is checked the same way, every platform of it.
func TestReleaseReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release: skipped with -short")
	}
	t.Parallel()
	const version = "v0.2.0"
	a := release(t, version)
	b := filepath.Join(t.TempDir(), "release")
	if err := runRelease(copySource(t), b, version, strings.Replace(hostPlatform, "_", "/", 1)); err != nil {
		t.Fatal(err)
	}
	filesA, filesB := checkSums(t, a), checkSums(t, b)
	if strings.Join(filesA, " ") != strings.Join(filesB, " ") {
		t.Fatalf("the two releases hold different files: %v and %v", filesA, filesB)
	}
	for _, f := range append(filesA, "SHA256SUMS") {
		x, errA := os.ReadFile(filepath.Join(a, f))
		y, errB := os.ReadFile(filepath.Join(b, f))
		if errA != nil || errB != nil {
			t.Fatalf("%s: %v %v", f, errA, errB)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds of the same source", f)
		}
	}
	checkRelease(t, a, version, []string{hostPlatform})

	// What make release wrote, if it ran: all four platforms.
	made := filepath.Join(vaulttest.RepoRoot(t), "build", "release")
	if _, err := os.Stat(filepath.Join(made, "SHA256SUMS")); err == nil {
		files := checkSums(t, made)
		t.Logf("build/release: SHA256SUMS matches its %d files", len(files))
	} else {
		t.Logf("no build/release (make release VERSION=... writes one): only the test's builds were checked")
	}
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
