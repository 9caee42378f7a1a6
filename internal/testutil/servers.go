package testutil

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The remote repositories of the tests are real servers on loopback, one
// per test: a second sshd for sftp (sftp.go), rclone's restic REST server
// (rest.go) and SeaweedFS for S3 (s3.go). Each is started by the test on
// 127.0.0.1 with free ports and its data in a temporary directory, waited
// for until it answers, and killed by PID, with every process below it,
// when the test ends (also when it fails). A test can freeze it (Stop,
// Cont) or kill and restart it (Kill, Restart) to play a hung or lost
// server. docs/testing.md lists them and what they need.

// ServerReadyTimeout bounds the wait for a server to answer after a start.
const ServerReadyTimeout = 60 * time.Second

// Server is a server process a test started: the process, its output, and
// the handles to freeze, kill and restart it.
type Server struct {
	// Name names the server in messages ("sshd", "rclone serve restic"...).
	Name string

	t      testing.TB
	newCmd func() *exec.Cmd
	ready  func() error

	mu      sync.Mutex
	cmd     *exec.Cmd
	output  *SyncBuffer
	exited  chan struct{}
	stopped bool
}

// startServer starts the server newCmd makes, registers its cleanup, and
// waits until ready returns nil (or fails the test: the server exited, or
// ServerReadyTimeout passed, with its output).
func startServer(t testing.TB, name string, newCmd func() *exec.Cmd, ready func() error) *Server {
	t.Helper()
	s := &Server{Name: name, t: t, newCmd: newCmd, ready: ready}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			if out := s.Output(); out != "" {
				if len(out) > 16<<10 {
					out = "...\n" + out[len(out)-16<<10:]
				}
				t.Logf("%s said:\n%s", name, out)
			}
		}
	})
	s.start(t)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	cmd := s.newCmd()
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Covers a test binary that dies before its cleanups run.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	// A process that escaped the tree may hold the output pipe: Wait gives
	// up on it after this.
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	// Pdeathsig fires when the thread that forked the server ends, not the
	// test: a thread the Go runtime ends later (the one a goroutine locked
	// and left locked, as daemon/mountns does for every backup) would kill
	// the server in the middle of the test. The server is forked from a
	// goroutine that keeps its thread until the server has exited.
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		t.Fatalf("%s: start %s: %v", s.Name, cmd.Path, err)
	}
	s.mu.Lock()
	s.cmd, s.output, s.exited, s.stopped = cmd, out, exited, false
	s.mu.Unlock()

	deadline := start.Add(ServerReadyTimeout)
	for {
		err := s.ready()
		if err == nil {
			t.Logf("%s (pid %d) ready in %s", s.Name, cmd.Process.Pid, time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited at start (%v), before it answered: %s\n%s", s.Name, cmd.ProcessState, err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %s: %v\n%s", s.Name, ServerReadyTimeout, err, out.String())
		}
	}
}

// Pid is the server's main process.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// Output is what the server printed since its last start.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.output == nil {
		return ""
	}
	return s.output.String()
}

// Stop freezes the server with SIGSTOP, the process and every process
// below it (sshd's per-connection children too): connections stay open
// and nothing answers, as a hung server does. Cont undoes it.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := stopTree(s.cmd.Process.Pid); n == 0 {
		s.t.Fatalf("%s: SIGSTOP: the process %d is gone", s.Name, s.cmd.Process.Pid)
	}
	s.stopped = true
}

// Cont resumes a server Stop froze, with SIGCONT to the same processes.
func (s *Server) Cont() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pid := range append([]int{s.cmd.Process.Pid}, descendants(s.cmd.Process.Pid)...) {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	s.stopped = false
}

// Kill kills the server with SIGKILL, every process below it too, and
// waits until its main process is gone: open connections break, and new
// ones are refused. Restart starts it again.
func (s *Server) Kill() {
	s.t.Helper()
	s.kill()
}

// Restart starts the server again after Kill (or kills it first), with the
// same ports, keys and data, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	s.start(s.t)
}

func (s *Server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	// Freeze the whole tree first so nothing forks or is reparented while
	// it is being killed, then kill what was frozen.
	pid := s.cmd.Process.Pid
	stopTree(pid)
	for _, p := range append(descendants(pid), pid) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("%s: pid %d still there 10 s after SIGKILL", s.Name, pid)
	}
}

// stopTree sends SIGSTOP to pid, then to the processes below it until no
// new one appears, and returns how many it stopped (0: pid is gone).
func stopTree(pid int) int {
	if syscall.Kill(pid, syscall.SIGSTOP) != nil {
		return 0
	}
	done := map[int]bool{pid: true}
	for range 20 {
		more := false
		for _, p := range descendants(pid) {
			if !done[p] {
				done[p] = true
				more = true
				_ = syscall.Kill(p, syscall.SIGSTOP)
			}
		}
		if !more {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return len(done)
}

// descendants lists the processes below pid (children, their children...).
func descendants(pid int) []int {
	children := map[int][]int{}
	for p, pp := range parents() {
		children[pp] = append(children[pp], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
// (Another process may take it before the server binds it; the server then
// fails at start with "address already in use", said in the test's failure.)
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts returns n different TCP ports on 127.0.0.1 that nothing listens
// on now: all are held open until every one is chosen, since a port closed
// at once can be handed out again by the next call (a server with several
// listeners, SeaweedFS, then failed with "address already in use").
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("a free port on 127.0.0.1: %v", err)
		}
		defer l.Close() //nolint:errcheck // only reserving a number
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// dialProbe connects to 127.0.0.1:port and returns the first bytes the
// server sends within a second (nothing, for a server that waits for the
// client to speak first).
func dialProbe(port int, read bool) (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close() //nolint:errcheck // only probing
	if !read {
		return "", nil
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// serverDir makes a temporary directory for a server, mode 0755 so that an
// unprivileged server user can reach what is inside, removed at cleanup.
func serverDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "subvault-"+prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
