package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procStat returns the parent pid and the CPU time (user + system, all threads)
// of a process, from /proc/<pid>/stat.
func procStat(pid int) (ppid int, cpu time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may hold spaces: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ppid, time.Duration(ut+st) * time.Second / clockTicks, true
}

// cpuTime is a process's CPU time so far, 0 when it is gone.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	_, cpu, _ := procStat(pid)
	return cpu
}

// rss is a process's resident set size in bytes (VmRSS), 0 when it is gone.
func rss(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// childByName finds the child of ppid whose executable is named name (a plugin
// process of a Vault server). It returns 0 when there is none.
func childByName(ppid int, name string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		parent, _, ok := procStat(pid)
		if !ok || parent != ppid {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err != nil {
			continue
		}
		if filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == name {
			return pid
		}
	}
	return 0
}

// dirUsage is what a directory tree holds: files, their bytes, and the disk
// space they occupy (allocated blocks).
type dirUsage struct {
	Files      int
	Bytes      int64
	DiskBytes  int64
	exists     bool
	walkErrors int
}

func usage(dir string) dirUsage {
	var u dirUsage
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			u.walkErrors++
			return nil
		}
		u.exists = true
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			u.walkErrors++
			return nil
		}
		u.Files++
		u.Bytes += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			u.DiskBytes += st.Blocks * 512
		}
		return nil
	})
	return u
}

func (u dirUsage) sub(v dirUsage) dirUsage {
	return dirUsage{Files: u.Files - v.Files, Bytes: u.Bytes - v.Bytes, DiskBytes: u.DiskBytes - v.DiskBytes}
}
