package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	HostileMain()
	os.Exit(m.Run())
}

func init() {
	// Reports who it runs as, and whether it can read the file it is given.
	RegisterHostile("whoami", func(args []string) error {
		fmt.Printf("uid=%d gid=%d groups=%d\n", os.Getuid(), os.Getgid(), len(mustGroups()))
		if _, err := os.ReadFile(args[0]); err == nil {
			return errors.New("read a root-only file")
		}
		return nil
	})
	RegisterHostile("wait-created", func(args []string) error {
		name, err := WaitCreated(args[0], func(n string) bool { return strings.HasPrefix(n, "victim") }, 10*time.Second)
		fmt.Println("saw", name)
		return err
	})
}

func mustGroups() []int {
	g, _ := os.Getgroups()
	return g
}

// A hostile process runs as uid and gid 65534 with no groups, cannot read
// root's 0600 file, and sees, with inotify, an entry made in a directory
// it can read.
func TestHostileProcessIsNobody(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := RunHostile(t, 10*time.Second, "whoami", secret)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "uid=65534 gid=65534 groups=0") {
		t.Errorf("the hostile process says %q", out)
	}

	open, err := os.MkdirTemp("", "subvault-hostile-watch-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(open) })
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	h := StartHostile(t, "wait-created", open)
	time.Sleep(300 * time.Millisecond)
	if err := os.Mkdir(filepath.Join(open, "victim-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := h.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.Output.String(), "saw victim-1") {
		t.Errorf("the hostile process says %q", h.Output.String())
	}
}
