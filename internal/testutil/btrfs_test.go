package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The helper must leave nothing behind: no mount, no loop device, no image.
func TestNewBtrfsTearsDown(t *testing.T) {
	var fs *BtrfsFS
	t.Run("inner", func(t *testing.T) {
		fs = NewBtrfs(t, 128, "home", "srv", "srv/db")
		for _, sv := range []string{"home", "srv", "srv/db"} {
			if out, err := exec.Command("btrfs", "subvolume", "show", fs.Path(sv)).CombinedOutput(); err != nil {
				t.Fatalf("%s is not a subvolume: %v: %s", sv, err, out)
			}
		}
	})
	if fs == nil {
		return
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), fs.Mount) {
		t.Errorf("%s still mounted after the test", fs.Mount)
	}
	out, _ := exec.Command("losetup", "-j", fs.Image).Output()
	if len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("loop device still attached: %s", out)
	}
	if _, err := os.Stat(fs.Image); !os.IsNotExist(err) {
		t.Errorf("image %s still exists", fs.Image)
	}
}
