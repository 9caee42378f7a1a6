package mountns

import (
	"fmt"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

func TestPlan(t *testing.T) {
	// The mount points of a typical host: / with /proc, /dev (and two
	// mounts stacked on /dev/pts), /tmp, /home as its own mount, a tmpfs
	// below /home, and /srv with a nested subvolume /srv/db.
	hostMounts := []string{"/", "/proc", "/sys", "/sys/fs/cgroup", "/dev", "/dev/pts", "/dev/pts", "/dev/shm",
		"/tmp", "/home", "/home/u/.cache/tmp", "/srv", "/srv/db/run", "/boot", "/boot/efi", "/var/lib/x y"}
	tests := []struct {
		name   string
		binds  []Bind
		keep   []string
		mounts []string
		want   []string // kind:path(<under)
	}{{
		name:   "one subvolume, nothing below it",
		binds:  []Bind{{Source: "/home/.snaps/1", Target: "/home"}},
		mounts: []string{"/", "/proc", "/home"},
		want:   []string{"snapshot:/home"},
	}, {
		name:   "root first, then the host mounts it covers, deeper targets in depth order",
		binds:  []Bind{{Source: "/home/.snaps/h", Target: "/home"}, {Source: "/.snaps/r", Target: "/"}},
		mounts: hostMounts,
		want: []string{
			"snapshot:/",
			"snapshot:/home",
			"submount:/boot</", "submount:/dev</", "submount:/proc</", "submount:/srv</", "submount:/sys</", "submount:/tmp</",
			"submount:/var/lib/x y</",
			"submount:/home/u/.cache/tmp</home",
		},
	}, {
		name:   "nested subvolumes: a mount below the inner one belongs to it",
		binds:  []Bind{{Source: "/srv/.snaps/db", Target: "/srv/db"}, {Source: "/srv/.snaps/srv", Target: "/srv"}},
		mounts: hostMounts,
		want:   []string{"snapshot:/srv", "snapshot:/srv/db", "submount:/srv/db/run</srv/db"},
	}, {
		name:   "keep-host paths: last, shallowest first; one inside another, or under a host mount, needs nothing",
		binds:  []Bind{{Source: "/.snaps/r", Target: "/"}},
		keep:   []string{"/root/.cache/restic", "/var/backups/repo", "/root/.cache/restic/x", "/tmp/restic", "/root/.cache/restic"},
		mounts: []string{"/", "/proc", "/tmp"},
		want:   []string{"snapshot:/", "submount:/proc</", "submount:/tmp</", "keep:/root/.cache/restic</", "keep:/var/backups/repo</"},
	}, {
		name:   "a keep-host path that is a host mount is bound as the keep-host path only",
		binds:  []Bind{{Source: "/srv/.snaps/srv", Target: "/srv"}},
		keep:   []string{"/srv/cache", "/etc/restic"},
		mounts: []string{"/", "/srv/cache", "/srv/cache/inner", "/srv/tmp"},
		want:   []string{"snapshot:/srv", "submount:/srv/tmp</srv", "keep:/srv/cache</srv"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			steps, left, err := plan(tt.binds, tt.keep, tt.mounts, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) > 0 {
				t.Errorf("left out without a leaveOut: %v", left)
			}
			var got []string
			for _, s := range steps {
				got = append(got, describe(s))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("plan:\n  got  %q\n  want %q", got, tt.want)
			}
		})
	}
}

// What leaveOut is asked, and in which order: only mounts no brought-back
// mount above them carries, shallowest first; below one left out, each is
// decided on its own.
func TestPlanLeavesOut(t *testing.T) {
	// / under systemd: ProtectSystem= binds over /usr and /etc, PrivateTmp=
	// over /tmp and /var/tmp, ProtectKernelModules= an inaccessible node
	// over /usr/lib/modules; /usr/local is a filesystem of its own, /run a
	// tmpfs with a mount below it; /home is a Target of its own.
	mounts := []string{"/", "/proc", "/run", "/run/user/1000", "/usr", "/usr/lib/modules", "/usr/local", "/usr/local/share/x",
		"/etc", "/tmp", "/var/tmp", "/home", "/home/u/usr-bind"}
	leave := map[string]string{
		"/usr": "same subvolume", "/usr/lib/modules": "inaccessible", "/etc": "same subvolume",
		"/tmp": "same subvolume", "/var/tmp": "same subvolume", "/home/u/usr-bind": "same subvolume",
	}
	var asked []string
	steps, left, err := plan([]Bind{{Source: "/.snaps/r", Target: "/"}, {Source: "/home/.snaps/h", Target: "/home"}}, nil, mounts, func(m, target string) string {
		asked = append(asked, m+"<"+target)
		return leave[m]
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range steps {
		got = append(got, describe(s))
	}
	want := []string{"snapshot:/", "snapshot:/home", "submount:/proc</", "submount:/run</", "submount:/usr/local</"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n  got  %q\n  want %q", got, want)
	}
	wantAsked := []string{"/etc</", "/proc</", "/run</", "/tmp</", "/usr</", "/usr/local</", "/var/tmp</", "/home/u/usr-bind</home", "/usr/lib/modules</"}
	if strings.Join(asked, " ") != strings.Join(wantAsked, " ") {
		t.Errorf("asked about\n  %q\nwant\n  %q", asked, wantAsked)
	}
	var gotLeft []string
	for _, l := range left {
		gotLeft = append(gotLeft, l.path+"<"+l.under+": "+l.reason)
	}
	wantLeft := []string{"/etc</: same subvolume", "/tmp</: same subvolume", "/usr</: same subvolume", "/var/tmp</: same subvolume",
		"/home/u/usr-bind</home: same subvolume", "/usr/lib/modules</: inaccessible"}
	if strings.Join(gotLeft, "\n") != strings.Join(wantLeft, "\n") {
		t.Errorf("left out:\n  got  %q\n  want %q", gotLeft, wantLeft)
	}
}

func describe(s step) string {
	switch s.kind {
	case stepSnapshot:
		return "snapshot:" + s.path
	case stepSubmount:
		return "submount:" + s.path + "<" + s.under
	default:
		return "keep:" + s.path + "<" + s.under
	}
}

func TestPlanRejects(t *testing.T) {
	tests := []struct {
		name  string
		binds []Bind
		keep  []string
		want  string
	}{
		{"relative source", []Bind{{Source: "snaps/x", Target: "/home"}}, nil, `cannot mount snapshot "snaps/x" over "/home" in the backup's namespace: both paths must be absolute and clean`},
		{"unclean target", []Bind{{Source: "/snaps/x", Target: "/home/"}}, nil, "must be absolute and clean"},
		{"two snapshots on one target", []Bind{{Source: "/s/1", Target: "/home"}, {Source: "/s/2", Target: "/home"}}, nil,
			"cannot mount snapshot /s/2 over /home in the backup's namespace: snapshot /s/1 is already mounted there"},
		{"keep-host over a target", []Bind{{Source: "/s/1", Target: "/srv/db"}}, []string{"/srv"},
			"cannot keep /srv as on the host in the backup's namespace: it would hide snapshot /s/1 mounted over /srv/db"},
		{"keep-host is a target", []Bind{{Source: "/s/1", Target: "/srv"}}, []string{"/srv"}, "it would hide snapshot /s/1"},
		{"relative keep-host", []Bind{{Source: "/s/1", Target: "/srv"}}, []string{"cache"}, `cannot keep "cache" as on the host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := plan(tt.binds, tt.keep, []string{"/"}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// The namespace's mountinfo as github.com/moby/sys/mountinfo parses it: the
// fields byDesign and plan use, unescaped.
func TestParseMountinfo(t *testing.T) {
	info := "22 27 0:21 / /proc rw,relatime - proc proc rw\n" +
		"45 27 0:40 / /mnt/with\\040space\\134and\\011tab rw - tmpfs tmpfs rw\n" +
		"46 27 0:41 / /trailing\\ rw - tmpfs tmpfs rw\n" +
		// optional fields before the separator; a bind's root
		"612 27 0:48 /@/usr /usr ro,relatime shared:1 master:2 - btrfs /dev/vda2 rw,subvolid=256,subvol=/@\n" +
		"613 612 0:25 /systemd/inaccessible/dir /usr/lib/modules ro,nosuid,nodev,noexec - tmpfs tmpfs rw,mode=755\n"
	mounts, err := mountinfo.GetMountsFromReader(strings.NewReader(info), nil)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		id                       int
		root, mountPoint, fstype string
	}
	var got []entry
	for _, m := range mounts {
		got = append(got, entry{m.ID, m.Root, m.Mountpoint, m.FSType})
	}
	want := []entry{
		{22, "/", "/proc", "proc"},
		{45, "/", "/mnt/with space\\and\ttab", "tmpfs"},
		{46, "/", "/trailing\\", "tmpfs"},
		{612, "/@/usr", "/usr", "btrfs"},
		{613, "/systemd/inaccessible/dir", "/usr/lib/modules", "tmpfs"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	for _, bad := range []string{"1 2 3\n", "1 2 3 / /x rw tmpfs tmpfs rw\n", "1 2 0:1 / /x rw -\n"} {
		if _, err := mountinfo.GetMountsFromReader(strings.NewReader(bad), nil); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}
