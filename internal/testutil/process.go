package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartProcess starts cmd, a server the test needs in the background
// (dbus-daemon, polkitd), with its output collected, and stops it by PID
// when the test ends: SIGTERM, then SIGKILL after 5 s. If the test failed,
// the output is logged under name. The returned channel is closed when the
// process exits.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) (output *SyncBuffer, exited <-chan struct{}) {
	t.Helper()
	output = &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = output, output
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Covers a test binary that dies before its cleanups run. The kernel
	// sends it when the thread that started the process ends, not the
	// process (golang/go#27505): the process is started from a thread
	// locked to a goroutine that lives until the process has exited. Else
	// a thread that started it could later be taken by a goroutine that
	// locks it and ends (a backup's mount namespace, daemon/mountns), and
	// the kernel would kill a dbus-daemon the test still uses.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the process
		err := cmd.Start()
		started <- err
		if err == nil {
			_ = cmd.Wait()
			close(done)
		}
	}()
	if err := <-started; err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() && output.String() != "" {
			t.Logf("%s said:\n%s", name, output.String())
		}
	})
	return output, done
}

// waitListening waits until a unix socket accepts connections (the socket
// file appears before its server listens on it), failing the test if the
// server exits first or 10 s pass.
func waitListening(t testing.TB, name, sock string, output *SyncBuffer, exited <-chan struct{}) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close() //nolint:errcheck,gosec // only probing
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited at start: %s", name, output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 10 s", name, sock)
		}
	}
}

// ProcessBelow returns the pid of a process under root (a child, or a
// child's child...) whose argv[0] ends in name and whose arguments include
// arg, or 0.
func ProcessBelow(root int, name, arg string) int {
	parent := parents()
	for pid := range parent {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		argv := strings.Split(string(cmdline), "\x00")
		if len(argv) < 2 || !strings.HasSuffix(argv[0], name) || !strings.Contains(string(cmdline), "\x00"+arg+"\x00") {
			continue
		}
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == root {
				return pid
			}
		}
	}
	return 0
}

// parents maps each process's pid to its parent's, from /proc/PID/stat
// ("pid (comm) state ppid ...").
func parents() map[int]int {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 {
			parent[pid], _ = strconv.Atoi(fields[1])
		}
	}
	return parent
}
