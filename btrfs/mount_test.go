package btrfs

import (
	"reflect"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

// The fields FindMount and MountedAt read from mountinfo, as
// github.com/moby/sys/mountinfo gives them: paths unescaped, the
// superblock options as the kernel wrote them.
func TestParseMountinfo(t *testing.T) {
	data := `22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
43 22 0:39 / /tmp/x/m\040nt rw,relatime shared:20 - btrfs /dev/loop0 rw,discard=async,space_cache=v2,subvolid=5,subvol=/
44 22 0:39 /sv /tmp/x/m2 rw,relatime - btrfs /dev/loop0 rw,space_cache=v2,subvolid=256,subvol=/sv
`
	entries, err := mountinfo.GetMountsFromReader(strings.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct{ root, mountPoint, fsType, source, superOptions string }
	var got []entry
	for _, e := range entries {
		got = append(got, entry{e.Root, e.Mountpoint, e.FSType, e.Source, e.VFSOptions})
	}
	want := []entry{
		{root: "/", mountPoint: "/", fsType: "ext4", source: "/dev/sda2", superOptions: "rw"},
		{root: "/", mountPoint: "/tmp/x/m nt", fsType: "btrfs", source: "/dev/loop0", superOptions: "rw,discard=async,space_cache=v2,subvolid=5,subvol=/"},
		{root: "/sv", mountPoint: "/tmp/x/m2", fsType: "btrfs", source: "/dev/loop0", superOptions: "rw,space_cache=v2,subvolid=256,subvol=/sv"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed:\n got %+v\nwant %+v", got, want)
	}
	if _, err := mountinfo.GetMountsFromReader(strings.NewReader("43 22 0:39 / /x rw\n"), nil); err == nil {
		t.Error("a line without the separator parsed")
	}
}

func TestSubvolOf(t *testing.T) {
	for _, tt := range []struct {
		options, subvol string
		id              uint64
	}{
		{"rw,discard=async,space_cache=v2,subvolid=5,subvol=/", "/", 5},
		{"rw,space_cache=v2,subvolid=256,subvol=/sv", "/sv", 256},
		// The kernel escapes a comma and a space in the value.
		{`rw,subvolid=257,subvol=/a\054b\040c`, "/a,b c", 257},
		{"rw,relatime", "", 0},
	} {
		if subvol, id := subvolOf(tt.options); subvol != tt.subvol || id != tt.id {
			t.Errorf("subvolOf(%q) = %q, %d; want %q, %d", tt.options, subvol, id, tt.subvol, tt.id)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:      "/a b",
		`/tab\011x`:    "/tab\tx",
		`/nl\012`:      "/nl\n",
		`/back\134sl`:  `/back\sl`,
		`/plain`:       "/plain",
		`/short\04`:    `/short\04`,
		`/notoctal\09`: `/notoctal\09`,
		`/big\400`:     `/big\400`,
	} {
		if got := UnescapeOctal(in); got != want {
			t.Errorf("UnescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnderMountPoint(t *testing.T) {
	for _, tt := range []struct {
		path, mountPoint string
		want             bool
	}{
		{"/srv/db", "/", true},
		{"/srv/db", "/srv", true},
		{"/srv", "/srv", true},
		{"/srvx", "/srv", false},
		{"/sr", "/srv", false},
	} {
		if got := underMountPoint(tt.path, tt.mountPoint); got != tt.want {
			t.Errorf("underMountPoint(%q, %q) = %v", tt.path, tt.mountPoint, got)
		}
	}
}
