package btrfs

import (
	"reflect"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	data := []byte(`22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
43 22 0:39 / /tmp/x/m\040nt rw,relatime shared:20 - btrfs /dev/loop0 rw,discard=async,space_cache=v2,subvolid=5,subvol=/
44 22 0:39 /sv /tmp/x/m2 rw,relatime - btrfs /dev/loop0 rw,space_cache=v2,subvolid=256,subvol=/sv
`)
	entries, err := parseMountinfo(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []mountEntry{
		{root: "/", mountPoint: "/", fsType: "ext4", source: "/dev/sda2", superOptions: "rw"},
		{root: "/", mountPoint: "/tmp/x/m nt", fsType: "btrfs", source: "/dev/loop0", superOptions: "rw,discard=async,space_cache=v2,subvolid=5,subvol=/"},
		{root: "/sv", mountPoint: "/tmp/x/m2", fsType: "btrfs", source: "/dev/loop0", superOptions: "rw,space_cache=v2,subvolid=256,subvol=/sv"},
	}
	if !reflect.DeepEqual(entries, want) {
		t.Errorf("parseMountinfo:\n got %+v\nwant %+v", entries, want)
	}
	if _, err := parseMountinfo([]byte("43 22 0:39 / /x rw\n")); err == nil {
		t.Error("a line without the separator parsed")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:      "/a b",
		`/tab\011x`:    "/tab\tx",
		`/nl\012`:      "/nl\n",
		`/back\134sl`:  `/back\sl`,
		`/plain`:       "/plain",
		`/short\04`:    `/short\04`,
		`/notoctal\09`: `/notoctal\09`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
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
