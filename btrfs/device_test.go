package btrfs_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// attachLoop attaches image to a free loop device and detaches it when the
// test ends.
func attachLoop(t *testing.T, image string) string {
	t.Helper()
	dev := strings.TrimSpace(testutil.Run(t, "losetup", "--find", "--show", image))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// headOf writes the first 1 MiB of a device (its superblock and more) to a
// file of size MiB in dir, and returns its path.
func headOf(t *testing.T, dev, dir string, sizeMiB int) string {
	t.Helper()
	data := make([]byte, 1<<20)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := filepath.Join(dir, fmt.Sprintf("head-%d.img", time.Now().UnixNano()))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(sizeMiB)<<20); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFilesystemUUID(t *testing.T) {
	fs := testutil.NewBtrfs(t, 0)
	m, err := btrfs.FindMount(fs.Mount)
	if err != nil {
		t.Fatal(err)
	}
	got, err := btrfs.FilesystemUUID(fs.Device)
	if err != nil {
		t.Fatal(err)
	}
	if got != m.FSID {
		t.Errorf("FilesystemUUID(%s) = %q, the mounted filesystem's UUID is %q", fs.Device, got, m.FSID)
	}
	// The same UUID btrfs-progs prints.
	if out := testutil.Run(t, "btrfs", "filesystem", "show", fs.Mount); !strings.Contains(out, "uuid: "+got) {
		t.Errorf("btrfs filesystem show does not name %s:\n%s", got, out)
	}

	dir := t.TempDir()
	t.Run("not btrfs", func(t *testing.T) {
		img := filepath.Join(dir, "zero.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 8<<20); err != nil {
			t.Fatal(err)
		}
		dev := attachLoop(t, img)
		_, err := btrfs.FilesystemUUID(dev)
		if !errors.Is(err, btrfs.ErrNotBtrfs) {
			t.Fatalf("FilesystemUUID of a zeroed device: %v, want ErrNotBtrfs", err)
		}
		t.Logf("error: %v", err)
	})
	t.Run("damaged superblock", func(t *testing.T) {
		img := headOf(t, fs.Device, dir, 2)
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// A byte of the label, inside what the checksum covers.
		if _, err := f.WriteAt([]byte{'X'}, 64<<10+0x12b); err != nil {
			t.Fatal(err)
		}
		f.Close()
		dev := attachLoop(t, img)
		_, err = btrfs.FilesystemUUID(dev)
		wantErr(t, err, "checksum")
		if !errors.Is(err, btrfs.ErrNotBtrfs) {
			t.Errorf("error %v does not wrap ErrNotBtrfs", err)
		}
	})
	t.Run("intact copy of the superblock", func(t *testing.T) {
		dev := attachLoop(t, headOf(t, fs.Device, dir, 2))
		if got, err := btrfs.FilesystemUUID(dev); err != nil || got != m.FSID {
			t.Errorf("FilesystemUUID of a copy of the superblock = %q, %v; want %q", got, err, m.FSID)
		}
	})
	t.Run("not a block device", func(t *testing.T) {
		img := headOf(t, fs.Device, dir, 2)
		_, err := btrfs.FilesystemUUID(img)
		wantErr(t, err, "not a block device")
		link := filepath.Join(dir, "link")
		if err := os.Symlink(fs.Device, link); err != nil {
			t.Fatal(err)
		}
		if _, err := btrfs.FilesystemUUID(link); err == nil {
			t.Error("FilesystemUUID followed a symlink")
		}
	})
}

func TestFindDevice(t *testing.T) {
	fs := testutil.NewBtrfs(t, 0)
	uuid, err := btrfs.FilesystemUUID(fs.Device)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := btrfs.FindDevice(uuid)
	t.Logf("FindDevice took %v", time.Since(start))
	if err != nil || got != fs.Device {
		t.Fatalf("FindDevice(%s) = %q, %v; want %s", uuid, got, err, fs.Device)
	}
	if got, err := btrfs.FindDevice(strings.ToUpper(uuid)); err != nil || got != fs.Device {
		t.Errorf("FindDevice of the upper-case UUID = %q, %v; want %s", got, err, fs.Device)
	}
	const absent = "0f6c1a2b-0000-4000-8000-000000000000"
	if got, err := btrfs.FindDevice(absent); err != nil || got != "" {
		t.Errorf("FindDevice(%s) = %q, %v; want nothing", absent, got, err)
	}
	if _, err := btrfs.FindDevice(""); err == nil {
		t.Error("FindDevice(\"\") gave no error")
	}

	devs, err := btrfs.BlockDevices()
	if err != nil {
		t.Fatal(err)
	}
	var ours *btrfs.BlockDevice
	for i, d := range devs {
		if d.Path() == fs.Device {
			ours = &devs[i]
		}
	}
	if ours == nil {
		t.Fatalf("BlockDevices does not list %s: %+v", fs.Device, devs)
	}
	t.Logf("%+v", *ours)
	if ours.Size == 0 || !strings.Contains(ours.Dev, ":") || !ours.Probeable() {
		t.Errorf("BlockDevices' entry of %s: %+v", fs.Device, *ours)
	}
}

// udev's database, when it has probed a device, is believed without reading
// the device.
func TestFindDeviceUdevDatabase(t *testing.T) {
	fs := testutil.NewBtrfs(t, 0)
	uuid, err := btrfs.FilesystemUUID(fs.Device)
	if err != nil {
		t.Fatal(err)
	}
	var dev string
	var seq uint64
	devs, err := btrfs.BlockDevices()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Path() == fs.Device {
			dev, seq = d.Dev, d.DiskSeq
		}
	}
	udev := t.TempDir()
	defer btrfs.SetDeviceDirs("", "", udev)()
	const other = "11111111-2222-4333-8444-555555555555"
	testutil.WriteFile(t, filepath.Join(udev, "b"+dev), "S:disk/by-uuid/"+other+"\nE:ID_FS_TYPE=btrfs\nE:ID_FS_UUID="+other+"\nE:ID_FS_UUID_ENC="+other+"\n")
	if got, err := btrfs.FindDevice(other); err != nil || got != fs.Device {
		t.Errorf("FindDevice(%s) with udev's word for it = %q, %v; want %s", other, got, err, fs.Device)
	}
	testutil.WriteFile(t, filepath.Join(udev, "b"+dev), "E:ID_FS_TYPE=ext4\nE:ID_FS_UUID="+uuid+"\n")
	if got, err := btrfs.FindDevice(uuid); err != nil || got != "" {
		t.Errorf("FindDevice(%s) when udev says ext4 = %q, %v; want nothing", uuid, got, err)
	}
	// An entry of an earlier medium in the same loop device: not believed.
	if seq != 0 {
		testutil.WriteFile(t, filepath.Join(udev, "b"+dev), fmt.Sprintf("E:DISKSEQ=%d\nE:ID_FS_TYPE=btrfs\nE:ID_FS_UUID=%s\n", seq-1, other))
		if got, err := btrfs.FindDevice(uuid); err != nil || got != fs.Device {
			t.Errorf("FindDevice(%s) with a stale udev entry = %q, %v; want %s", uuid, got, err, fs.Device)
		}
	}
	// An entry udev did not probe (no ID_FS_TYPE): the superblock is read.
	testutil.WriteFile(t, filepath.Join(udev, "b"+dev), "E:DEVTYPE=disk\n")
	if got, err := btrfs.FindDevice(uuid); err != nil || got != fs.Device {
		t.Errorf("FindDevice(%s) without udev's probe = %q, %v; want %s", uuid, got, err, fs.Device)
	}
}

func init() {
	// plant-devices DIR IMAGE DEVICE NAME...: in DIR (standing for /dev),
	// the regular file IMAGE copied under the name of DEVICE, and a
	// symlink to the real DEVICE under every other NAME.
	testutil.RegisterHostile("plant-devices", func(args []string) error {
		dir, image, device := args[0], args[1], args[2]
		data, err := os.ReadFile(image)
		if err != nil {
			return err
		}
		for _, name := range args[3:] {
			p := filepath.Join(dir, name)
			if filepath.Join("/dev", name) == device {
				err = os.WriteFile(p, data, 0o644)
			} else {
				err = os.Symlink(device, p)
			}
			if err != nil {
				return err
			}
		}
		fmt.Println("planted", len(args)-3)
		return nil
	})
}

// A user who could plant names where FindDevice opens device nodes gets
// nothing read: links are not followed, regular files are refused.
func TestFindDeviceHostile(t *testing.T) {
	fs := testutil.NewBtrfs(t, 0)
	uuid, err := btrfs.FilesystemUUID(fs.Device)
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "subvault-plant-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	image := headOf(t, fs.Device, base, 1)
	planted := filepath.Join(base, "dev")
	if err := os.Mkdir(planted, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(planted, testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	devs, err := btrfs.BlockDevices()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{planted, image, fs.Device}
	for _, d := range devs {
		if !strings.Contains(d.Name, "!") {
			args = append(args, d.Name)
		}
	}
	out, err := testutil.RunHostile(t, 30*time.Second, "plant-devices", args...)
	if err != nil {
		t.Fatalf("hostile: %v: %s", err, out)
	}
	defer btrfs.SetDeviceDirs("", planted, "/nonexistent")()
	if got, err := btrfs.FindDevice(uuid); err != nil || got != "" {
		t.Errorf("FindDevice(%s) among planted names = %q, %v; want nothing", uuid, got, err)
	}
	// The same names in the real /dev find it: the plant was the difference.
	restore := btrfs.SetDeviceDirs("", "/dev", "")
	if got, err := btrfs.FindDevice(uuid); err != nil || got != fs.Device {
		t.Errorf("FindDevice(%s) = %q, %v; want %s", uuid, got, err, fs.Device)
	}
	restore()
}
