package mountns

import (
	"fmt"
	"strings"
	"testing"
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
		binds:  []Bind{{"/home/.snaps/1", "/home"}},
		mounts: []string{"/", "/proc", "/home"},
		want:   []string{"snapshot:/home"},
	}, {
		name:   "root first, then the host mounts it covers, deeper targets in depth order",
		binds:  []Bind{{"/home/.snaps/h", "/home"}, {"/.snaps/r", "/"}},
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
		binds:  []Bind{{"/srv/.snaps/db", "/srv/db"}, {"/srv/.snaps/srv", "/srv"}},
		mounts: hostMounts,
		want:   []string{"snapshot:/srv", "snapshot:/srv/db", "submount:/srv/db/run</srv/db"},
	}, {
		name:   "keep-host paths: last, shallowest first; one inside another, or under a host mount, needs nothing",
		binds:  []Bind{{"/.snaps/r", "/"}},
		keep:   []string{"/root/.cache/restic", "/var/backups/repo", "/root/.cache/restic/x", "/tmp/restic", "/root/.cache/restic"},
		mounts: []string{"/", "/proc", "/tmp"},
		want:   []string{"snapshot:/", "submount:/proc</", "submount:/tmp</", "keep:/root/.cache/restic</", "keep:/var/backups/repo</"},
	}, {
		name:   "a keep-host path that is a host mount is bound as the keep-host path only",
		binds:  []Bind{{"/srv/.snaps/srv", "/srv"}},
		keep:   []string{"/srv/cache", "/etc/restic"},
		mounts: []string{"/", "/srv/cache", "/srv/cache/inner", "/srv/tmp"},
		want:   []string{"snapshot:/srv", "submount:/srv/tmp</srv", "keep:/srv/cache</srv"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			steps, err := plan(tt.binds, tt.keep, tt.mounts)
			if err != nil {
				t.Fatal(err)
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
		{"nothing to mount", nil, nil, "no snapshot to mount"},
		{"relative source", []Bind{{"snaps/x", "/home"}}, nil, `cannot mount snapshot "snaps/x" over "/home" in the backup's namespace: both paths must be absolute and clean`},
		{"unclean target", []Bind{{"/snaps/x", "/home/"}}, nil, "must be absolute and clean"},
		{"two snapshots on one target", []Bind{{"/s/1", "/home"}, {"/s/2", "/home"}}, nil,
			"cannot mount snapshot /s/2 over /home in the backup's namespace: snapshot /s/1 is already mounted there"},
		{"keep-host over a target", []Bind{{"/s/1", "/srv/db"}}, []string{"/srv"},
			"cannot keep /srv as on the host in the backup's namespace: it would hide snapshot /s/1 mounted over /srv/db"},
		{"keep-host is a target", []Bind{{"/s/1", "/srv"}}, []string{"/srv"}, "it would hide snapshot /s/1"},
		{"relative keep-host", []Bind{{"/s/1", "/srv"}}, []string{"cache"}, `cannot keep "cache" as on the host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := plan(tt.binds, tt.keep, []string{"/"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestMountPoints(t *testing.T) {
	info := "22 27 0:21 / /proc rw,relatime - proc proc rw\n" +
		"45 27 0:40 / /mnt/with\\040space\\134and\\011tab rw - tmpfs tmpfs rw\n" +
		"46 27 0:41 / /trailing\\ rw - tmpfs tmpfs rw\n"
	got, err := mountPoints(info)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/proc", "/mnt/with space\\and\ttab", "/trailing\\"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := mountPoints("1 2 3\n"); err == nil {
		t.Error("a short line was accepted")
	}
}
