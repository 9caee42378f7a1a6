package btrfs

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestNameRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 21, 3, 0, 5, 0, time.UTC)
	tests := []struct {
		snap Snapshot
		name string
	}{
		{Snapshot{Plan: "nightly", Time: at, JobID: 42, Subvolume: "/home"}, `subvault@nightly@20261121T030005Z@42@home`},
		{Snapshot{Plan: "nightly", Time: at, JobID: 0, Subvolume: "/"}, `subvault@nightly@20261121T030005Z@0@-`},
		{Snapshot{Plan: "db.hourly-2", Time: at, JobID: 4294967295, Subvolume: "/srv/db"}, `subvault@db.hourly-2@20261121T030005Z@4294967295@srv-db`},
		{Snapshot{Plan: "p", Time: at, JobID: 1, Subvolume: "/srv/my-data"}, `subvault@p@20261121T030005Z@1@srv-my\x2ddata`},
		{Snapshot{Plan: "p", Time: at, JobID: 1, Subvolume: "/.snapshots/a b"}, `subvault@p@20261121T030005Z@1@\x2esnapshots-a\x20b`},
		{Snapshot{Plan: "p", Time: at, JobID: 1, Subvolume: "/srv/.hidden/x@y"}, `subvault@p@20261121T030005Z@1@srv-.hidden-x\x40y`},
		{Snapshot{Plan: "p", Time: at, JobID: 1, Subvolume: "/home/Ä"}, `subvault@p@20261121T030005Z@1@home-\xc3\x84`},
		{Snapshot{Plan: "home", Time: at, JobID: 7, Subvolume: "/home", Pinned: true}, `subvault-pinned@home@20261121T030005Z@7@home`},
	}
	for _, tt := range tests {
		if err := tt.snap.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", tt.snap, err)
		}
		if got := tt.snap.Name(); got != tt.name {
			t.Errorf("Name(%+v) = %q, want %q", tt.snap, got, tt.name)
		}
		got, err := ParseName(tt.name)
		if err != nil {
			t.Errorf("ParseName(%q): %v", tt.name, err)
			continue
		}
		if got != tt.snap {
			t.Errorf("ParseName(%q) = %+v, want %+v", tt.name, got, tt.snap)
		}
	}
}

// The escaping must be systemd-escape --path's, byte for byte.
func TestEscapeMatchesSystemdEscape(t *testing.T) {
	if _, err := exec.LookPath("systemd-escape"); err != nil {
		t.Skip("systemd-escape not installed; the table in TestNameRoundTrip still checks the format")
	}
	for _, p := range []string{"/", "/home", "/srv/db", "/srv/my-data", "/.snapshots/a b", "/srv/.hidden/x@y", "/home/Ä", "/a:b_c.d", "/x\\y", "/tab\there"} {
		out, err := exec.Command("systemd-escape", "--path", p).Output()
		if err != nil {
			t.Fatalf("systemd-escape --path %q: %v", p, err)
		}
		want := strings.TrimSuffix(string(out), "\n")
		if got := escapePath(p); got != want {
			t.Errorf("escapePath(%q) = %q, systemd-escape says %q", p, got, want)
		}
		if back, err := unescapePath(want); err != nil || back != p {
			t.Errorf("unescapePath(%q) = %q, %v; want %q", want, back, err, p)
		}
	}
}

func TestParseNameRejects(t *testing.T) {
	for _, name := range []string{
		"",
		"mysnap",
		"home-2026-11-21",
		`subvault@nightly@20261121T030005Z@42`, // too few fields
		`subvault@nightly@20261121T030005Z@42@home@x`, // extra field
		`Subvault@nightly@20261121T030005Z@42@home`,   // prefix case
		`subvault@@20261121T030005Z@42@home`,          // empty plan
		`subvault@-plan@20261121T030005Z@42@home`,     // plan starts with -
		`subvault@` + strings.Repeat("p", 65) + `@20261121T030005Z@42@home`,
		`subvault@nightly@20261121T030005@42@home`,            // no Z
		`subvault@nightly@20261121t030005Z@42@home`,           // lower-case t
		`subvault@nightly@20261321T030005Z@42@home`,           // month 13
		`subvault@nightly@20260230T030005Z@42@home`,           // Feb 30
		`subvault@nightly@20261121T250005Z@42@home`,           // hour 25
		`subvault@nightly@20261121T030005Z+01@42@home`,        // trailing junk in time
		`subvault@nightly@+0261121T030005Z@42@home`,           // sign
		`subvault@nightly@20261121T030005Z@042@home`,          // leading zero
		`subvault@nightly@20261121T030005Z@+42@home`,          // sign
		`subvault@nightly@20261121T030005Z@4294967296@home`,   // job id overflow
		`subvault@nightly@20261121T030005Z@-1@home`,           // negative job id
		`subvault@nightly@20261121T030005Z@@home`,             // empty job id
		`subvault@nightly@20261121T030005Z@42@`,               // empty subvolume
		`subvault@nightly@20261121T030005Z@42@-home`,          // "//home"
		`subvault@nightly@20261121T030005Z@42@home-`,          // trailing slash
		`subvault@nightly@20261121T030005Z@42@home--x`,        // "//"
		`subvault@nightly@20261121T030005Z@42@srv-..-etc`,     // ".." component
		`subvault@nightly@20261121T030005Z@42@srv-.`,          // "." component
		`subvault@nightly@20261121T030005Z@42@.snapshots`,     // unescaped leading dot
		`subvault@nightly@20261121T030005Z@42@srv-my\x2Ddata`, // upper-case hex
		`subvault@nightly@20261121T030005Z@42@srv-my\X2ddata`, // upper-case X
		`subvault@nightly@20261121T030005Z@42@\x68ome`,        // needless escape of 'h'
		`subvault@nightly@20261121T030005Z@42@srv-\x2e`,       // needless escape of inner dot ("/srv/." anyway)
		`subvault@nightly@20261121T030005Z@42@srv-\x2ex`,      // needless escape of inner dot
		`subvault@nightly@20261121T030005Z@42@home\x2`,        // truncated escape
		`subvault@nightly@20261121T030005Z@42@home\`,          // lone backslash
		`subvault@nightly@20261121T030005Z@42@home\x00`,       // NUL
		`subvault@nightly@20261121T030005Z@42@my data`,        // unescaped space
		`subvault@nightly@20261121T030005Z@42@home ` + "\n",   // trailing junk
	} {
		if s, err := ParseName(name); err == nil {
			t.Errorf("ParseName(%q) = %+v, want an error", name, s)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, seed := range []string{
		`subvault@nightly@20261121T030005Z@42@home`,
		`subvault@nightly@20261121T030005Z@0@-`,
		`subvault@db.hourly-2@20261121T030005Z@4294967295@srv-db`,
		`subvault@p@20261121T030005Z@1@srv-my\x2ddata`,
		`subvault@p@20261121T030005Z@1@\x2esnapshots-a\x20b`,
		`subvault@p@20261121T030005Z@1@home-\xc3\x84`,
		`subvault@p@20261121T030005Z@1@home-\xC3\x84`,
		`subvault@p@00010101T000000Z@1@a`,
		`subvault@p@99991231T235959Z@1@a`,
		`subvault@nightly@20261121T030005Z@042@home`,
		`subvault-pinned@home@20261121T030005Z@7@home`,
		`subvault-kept@home@20261121T030005Z@7@home`,
		`mysnap`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		s, err := ParseName(name)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseName(%q) = %+v, which does not validate: %v", name, s, err)
		}
		if got := s.Name(); got != name {
			t.Fatalf("ParseName(%q).Name() = %q", name, got)
		}
		again, err := ParseName(s.Name())
		if err != nil || again != s {
			t.Fatalf("ParseName(Name()) = %+v, %v; want %+v", again, err, s)
		}
	})
}

// The other direction: any valid Snapshot survives Name and ParseName.
func FuzzNameRoundTrip(f *testing.F) {
	f.Add("nightly", int64(1795230005), uint32(42), "/home")
	f.Add("p", int64(0), uint32(0), "/")
	f.Add("db.hourly-2", int64(-62135596800), uint32(4294967295), "/srv/my-data/.x/a b@c\\d")
	f.Fuzz(func(t *testing.T, plan string, unix int64, job uint32, subvolume string) {
		s := Snapshot{Plan: plan, Time: time.Unix(unix, 0).UTC(), JobID: job, Subvolume: subvolume}
		if s.Validate() != nil {
			return
		}
		got, err := ParseName(s.Name())
		if err != nil {
			t.Fatalf("ParseName(%q) of valid %+v: %v", s.Name(), s, err)
		}
		if got != s {
			t.Fatalf("ParseName(%q) = %+v, want %+v", s.Name(), got, s)
		}
	})
}
