package devices

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// A known device is never read again; one gone and back is new.
func TestScanReadsOnlyNewDevices(t *testing.T) {
	devs := []btrfs.BlockDevice{
		{Name: "vda", Dev: "254:0", Size: 10 << 30, DiskSeq: 1},
		{Name: "loop0", Dev: "7:0", Size: 0, DiskSeq: 5},
	}
	fsOf := map[string]string{"vda": "", "loop0": "aaaa"}
	reads := map[string]int{}
	w := New()
	w.list = func() ([]btrfs.BlockDevice, error) { return devs, nil }
	w.fsUUID = func(d btrfs.BlockDevice) (string, error) { reads[d.Name]++; return fsOf[d.Name], nil }

	scan := func(want ...string) {
		t.Helper()
		got, err := w.Scan()
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, a := range got {
			s = append(s, a.UUID+"@"+a.Device)
		}
		if fmt.Sprint(s) != fmt.Sprint(want) {
			t.Errorf("Scan = %v, want %v", s, want)
		}
	}
	scan() // vda read once, holds nothing; loop0 empty: not read
	for range 3 {
		scan()
	}
	if reads["vda"] != 1 || reads["loop0"] != 0 {
		t.Errorf("reads after four scans: %v, want vda once and the empty loop0 never", reads)
	}
	// loop0 attached: a new size and diskseq.
	devs[1] = btrfs.BlockDevice{Name: "loop0", Dev: "7:0", Size: 1 << 30, DiskSeq: 6}
	scan("aaaa@/dev/loop0")
	scan()
	// Detached and attached again between two scans: a new diskseq.
	devs[1].DiskSeq = 8
	scan("aaaa@/dev/loop0")
	// Gone, then back the same: new again.
	devs = devs[:1]
	scan()
	devs = append(devs, btrfs.BlockDevice{Name: "loop0", Dev: "7:0", Size: 1 << 30, DiskSeq: 8})
	scan("aaaa@/dev/loop0")
	if reads["vda"] != 1 || reads["loop0"] != 3 {
		t.Errorf("reads: %v, want vda once and loop0 at each of its 3 appearances", reads)
	}
}

// mkfsImage makes an unmounted btrfs image with the given UUID.
func mkfsImage(t *testing.T, dir, name, uuid string) string {
	t.Helper()
	img := filepath.Join(dir, name)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(114 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	testutil.Run(t, "mkfs.btrfs", "-q", "-U", uuid, img)
	return img
}

func attach(t *testing.T, img string) (dev string, detach func()) {
	t.Helper()
	dev = strings.TrimSpace(testutil.Run(t, "losetup", "--find", "--show", img))
	var once sync.Once
	detach = func() {
		once.Do(func() {
			if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v: %s", dev, err, out)
			}
		})
	}
	t.Cleanup(detach)
	return dev, detach
}

func TestWatchLoopDevice(t *testing.T) {
	testutil.SkipShort(t, "loop devices")
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "mkfs.btrfs", "btrfs-progs")
	testutil.RequireCommand(t, "losetup", "mount")
	const (
		wantUUID  = "5ab1e5e5-0000-4000-8000-00000000d15c"
		otherUUID = "0dd0dd00-0000-4000-8000-00000000d15c"
		interval  = 200 * time.Millisecond
	)
	dir := t.TempDir()
	img := mkfsImage(t, dir, "want.img", wantUUID)
	other := mkfsImage(t, dir, "other.img", otherUUID)

	type call struct{ uuid, dev string }
	calls := make(chan call, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, interval, func() []string { return []string{strings.ToUpper(wantUUID)} },
			func(uuid, dev string) { calls <- call{uuid, dev} })
	}()
	t.Cleanup(func() { cancel(); <-done })

	expect := func(what, dev string) {
		t.Helper()
		start := time.Now()
		select {
		case c := <-calls:
			t.Logf("%s: found %s on %s after %v", what, c.uuid, c.dev, time.Since(start))
			if c.dev != dev || c.uuid != strings.ToUpper(wantUUID) {
				t.Errorf("%s: found(%s, %s), want (%s, %s)", what, c.uuid, c.dev, strings.ToUpper(wantUUID), dev)
			}
		case <-time.After(20 * interval):
			t.Fatalf("%s: found not called within %v", what, 20*interval)
		}
	}
	none := func(what string) {
		t.Helper()
		select {
		case c := <-calls:
			t.Errorf("%s: found(%s, %s) called", what, c.uuid, c.dev)
		case <-time.After(5 * interval):
		}
	}

	time.Sleep(2 * interval) // Watch has listed what was there
	none("nothing attached")
	dev, detach := attach(t, img)
	expect("attached", dev)
	none("still attached")
	detach()
	time.Sleep(3 * interval)
	dev, detach = attach(t, img)
	expect("attached again", dev)
	// Detached and attached to the same loop device at once, within one
	// interval: the kernel's diskseq tells the two apart.
	detach()
	testutil.Run(t, "losetup", dev, img)
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	expect("attached again to "+dev+" at once", dev)
	attach(t, other)
	none("another filesystem attached")
}
