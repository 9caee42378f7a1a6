package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestResetDecoded checks what the sample's reset section becomes: the
// defaults (clean latest, keep last 5) and the values as written.
func TestResetDecoded(t *testing.T) {
	t.Parallel()
	cfg, err := parseFile(t, "testdata/good/reset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []*ResetSubvolume{
		{Path: "/", Clean: ResetLatest, Persist: []string{"/etc/machine-id", "/etc/ssh", "/var/lib/subvault", "/var/log"}, Keep: DefaultResetKeep},
		{Path: "/home", Clean: "subvault-pinned@reset@20260101T120000Z@0@home", Persist: []string{"/home/me/.ssh", "/home/me/Documents"},
			Keep: KeepSnapshots{Last: 10, Daily: 7}},
	}
	if cfg.Reset == nil || !reflect.DeepEqual(cfg.Reset.Subvolumes, want) {
		t.Fatalf("Reset = %+v, want %+v", cfg.Reset, want)
	}
	if sv := cfg.ResetSubvolume("/home/"); sv == nil || sv.Path != "/home" {
		t.Errorf("ResetSubvolume(/home/) = %+v, want the /home entry", sv)
	}
	if sv := cfg.ResetSubvolume("/var"); sv != nil {
		t.Errorf("ResetSubvolume(/var) = %+v, want nil", sv)
	}
	if w := cfg.ResetWarnings(); len(w) != 0 {
		t.Errorf("ResetWarnings = %q, want none (state_dir and machine-id are persisted)", w)
	}
	none, err := Parse("none.yaml", []byte("settings: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if none.Reset != nil {
		t.Errorf("a file without reset has Reset %+v, want nil", none.Reset)
	}
}

// TestResetWarnings: check-config warns, without refusing, when a reset of
// / would throw away the state directory or the machine id at every boot.
func TestResetWarnings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings, one per warning
	}{
		{"nothing persisted", "reset:\n  subvolumes:\n    - path: /\n",
			[]string{"does not persist /var/lib/subvault", "does not persist /etc/machine-id"}},
		{"state_dir elsewhere", "settings: {state_dir: /srv/state}\nreset:\n  subvolumes:\n    - path: /\n      persist: [/etc/machine-id, /var/lib/subvault]\n",
			[]string{"the reset of / does not persist /srv/state"}},
		{"parent persisted", "reset:\n  subvolumes:\n    - path: /\n      persist: [/etc, /var/lib]\n", nil},
		{"state_dir in /var, reset too", "reset:\n  subvolumes:\n    - path: /\n      persist: [/etc/machine-id, /var/lib/subvault]\n    - path: /var\n",
			[]string{"the reset of /var does not persist /var/lib/subvault"}},
		{"no reset of /", "reset:\n  subvolumes:\n    - path: /home\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("reset.yaml", []byte(tc.yaml))
			if tc.name == "state_dir in /var, reset too" {
				// /var/lib/subvault is in /var's subvolume: the config refuses
				// it in /'s persist; the warning is about /var's.
				if err == nil || !strings.Contains(err.Error(), `"/var/lib/subvault" is in /var, another subvolume`) {
					t.Fatalf("Parse = %v, want the persisted path refused in /'s list", err)
				}
				cfg, err = Parse("reset.yaml", []byte("reset:\n  subvolumes:\n    - path: /\n      persist: [/etc/machine-id]\n    - path: /var\n"))
			}
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.ResetWarnings()
			if len(got) != len(tc.want) {
				t.Fatalf("ResetWarnings = %q, want %d warnings", got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
