package testutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A hostile process is the attacker of the security tests: a real process
// of uid and gid 65534 (nobody) with no supplementary groups, doing to the
// daemon's paths and bus what a local user could (planting links, swapping
// directories, flooding calls), racing it with inotify or polling.
//
// It is the test binary itself, copied where nobody can run it and started
// with SUBVAULT_HOSTILE naming a function the test package registered;
// HostileMain, first thing in the package's TestMain, runs that function
// instead of the tests. The function's arguments are the process's, and
// what it prints comes back in Hostile.Output.

// HostileEnv names the registered function a hostile process runs.
const HostileEnv = "SUBVAULT_HOSTILE"

var (
	hostileMu    sync.Mutex
	hostileFuncs = map[string]func(args []string) error{}
)

// RegisterHostile makes f runnable as a hostile process under name. Call it
// from an init function or a package-level var, so the copy of the binary
// that runs as nobody has it too.
func RegisterHostile(name string, f func(args []string) error) {
	hostileMu.Lock()
	defer hostileMu.Unlock()
	if _, dup := hostileFuncs[name]; dup {
		panic("testutil: hostile function registered twice: " + name)
	}
	hostileFuncs[name] = f
}

// HostileMain runs the registered function and exits when this process
// was started as a hostile one (exit 0 when the function returns nil, 1
// with the error on stderr otherwise); it returns at once otherwise.
func HostileMain() {
	name := os.Getenv(HostileEnv)
	if name == "" {
		return
	}
	hostileMu.Lock()
	f := hostileFuncs[name]
	hostileMu.Unlock()
	if f == nil {
		fmt.Fprintf(os.Stderr, "hostile: no function %q registered\n", name)
		os.Exit(2)
	}
	if err := f(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "hostile %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Hostile is a running hostile process.
type Hostile struct {
	Name   string
	Output *SyncBuffer
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// StartHostile starts the function registered as name, as uid 65534, with
// args. It is stopped by PID (SIGKILL) when the test ends, and its binary
// removed; what it printed is logged when the test failed.
func StartHostile(t testing.TB, name string, args ...string) *Hostile {
	t.Helper()
	RequireNobody(t)
	bin := hostileBinary(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{HostileEnv + "=" + name, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/nonexistent"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: NobodyUID, Gid: NobodyGID, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	h := &Hostile{Name: name, Output: &SyncBuffer{}, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = h.Output, h.Output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the hostile process %s: %v", name, err)
	}
	go func() { h.err = cmd.Wait(); close(h.done) }()
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("hostile process %s said:\n%s", name, h.Output.String())
		}
	})
	return h
}

// Pid is the hostile process's.
func (h *Hostile) Pid() int { return h.cmd.Process.Pid }

// Done is closed when the process has exited.
func (h *Hostile) Done() <-chan struct{} { return h.done }

// Wait waits up to limit for the process to exit and returns its error
// (with what it printed), or an error saying it is still running.
func (h *Hostile) Wait(limit time.Duration) error {
	select {
	case <-h.done:
	case <-time.After(limit):
		return fmt.Errorf("hostile process %s still running after %v", h.Name, limit)
	}
	if h.err != nil {
		return fmt.Errorf("hostile process %s: %w: %s", h.Name, h.err, strings.TrimSpace(h.Output.String()))
	}
	return nil
}

// Stop kills the process and waits for it.
func (h *Hostile) Stop() {
	select {
	case <-h.done:
		return
	default:
	}
	_ = h.cmd.Process.Kill()
	<-h.done
}

// RunHostile runs the function registered as name as uid 65534 to the end
// (at most limit) and returns what it printed and its error.
func RunHostile(t testing.TB, limit time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	h := StartHostile(t, name, args...)
	err := h.Wait(limit)
	h.Stop()
	return h.Output.String(), err
}

// hostileBinary copies the test binary into a directory of mode 755 (the
// go tool's build directory is root's, 700), once per test.
func hostileBinary(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "subvault-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	if err := copyExecutable(self, bin); err != nil {
		t.Fatalf("copy the test binary for the hostile process: %v", err)
	}
	return bin
}

func copyExecutable(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close() //nolint:errcheck // read only
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}

// WaitCreated waits, with inotify, until an entry whose name match accepts
// appears in dir (or is there already), and returns its name. It is what a
// hostile process races the daemon with.
func WaitCreated(dir string, match func(name string) bool, limit time.Duration) (string, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return "", fmt.Errorf("inotify: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		return "", fmt.Errorf("watch %s: %w", dir, err)
	}
	// Watching first, then looking: nothing falls between.
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if match(e.Name()) {
				return e.Name(), nil
			}
		}
	}
	deadline := time.Now().Add(limit)
	buf := make([]byte, 64<<10)
	for time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 50); err != nil && !errors.Is(err, unix.EINTR) {
			return "", err
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return "", err
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			name := strings.TrimRight(string(nameBytes), "\x00")
			if match(name) {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("no matching entry appeared in %s within %v", dir, limit)
}

// WaitCommandLine polls /proc, as any user can, until a process's command
// line holds every one of words, and returns its pid and argv.
func WaitCommandLine(limit time.Duration, words ...string) (int, []string, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || len(raw) == 0 {
				continue
			}
			argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
			all := true
			for _, w := range words {
				if !strings.Contains(string(raw), w) {
					all = false
					break
				}
			}
			if all {
				return pid, argv, nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, nil, fmt.Errorf("no process with %q in its command line within %v", words, limit)
}
