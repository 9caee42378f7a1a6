package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestTargetsParsed: testdata/good/targets.yaml loads into the targets and
// plans' sends the daemon acts on: the UUID lowercased, a UUID target's
// subdir defaulted, days read as days, the defaults of target_retention
// and target_pin_for, and a send_schedule parsed.
func TestTargetsParsed(t *testing.T) {
	t.Parallel()
	cfg, err := parseFile(t, "testdata/good/targets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*Target{
		"usb":      {Name: "usb", Path: "/mnt/usb/subvault"},
		"disk":     {Name: "disk", UUID: "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", Subdir: DefaultTargetSubdir},
		"nas-disk": {Name: "nas-disk", UUID: "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d", Subdir: "backups/laptop"},
	}
	if !reflect.DeepEqual(cfg.Targets, want) {
		t.Errorf("targets = %+v, want %+v", cfg.Targets, want)
	}
	if got := cfg.TargetNames(); !reflect.DeepEqual(got, []string{"disk", "nas-disk", "usb"}) {
		t.Errorf("TargetNames() = %q", got)
	}
	home, root, varPlan := cfg.Plans["home"], cfg.Plans["root"], cfg.Plans["var"]
	if !reflect.DeepEqual(home.SendTo, []string{"usb", "disk"}) {
		t.Errorf("home.SendTo = %q, want [usb disk] in file order", home.SendTo)
	}
	if want := (KeepSnapshots{Last: 5, Daily: 7}); home.TargetRetention != want {
		t.Errorf("home.TargetRetention = %+v, want %+v", home.TargetRetention, want)
	}
	if home.TargetPinFor != 30*24*time.Hour {
		t.Errorf("home.TargetPinFor = %v, want 30 days", home.TargetPinFor)
	}
	if home.SendSchedule != "" || home.SendSpec != nil {
		t.Errorf("home has a send schedule %q; want none (a send after each backup)", home.SendSchedule)
	}
	if root.TargetRetention != DefaultTargetRetention() || DefaultTargetRetention() != (KeepSnapshots{Last: 10}) {
		t.Errorf("root.TargetRetention = %+v, want the default {last: 10}", root.TargetRetention)
	}
	if root.SendSchedule != "@daily" || root.SendSpec == nil {
		t.Errorf("root's send_schedule = %q (spec %v), want @daily parsed", root.SendSchedule, root.SendSpec)
	}
	if root.TargetPinFor != 720*time.Hour {
		t.Errorf("root.TargetPinFor = %v, want 720h", root.TargetPinFor)
	}
	if len(varPlan.SendTo) != 0 || varPlan.TargetPinFor != DefaultTargetPinFor {
		t.Errorf("var: SendTo %q, TargetPinFor %v; want none and the default 90 days", varPlan.SendTo, varPlan.TargetPinFor)
	}
}

// TestTargetRetentionEmpty: target_retention: {} keeps only the newest
// copy (documented), and is not refused.
func TestTargetRetentionEmpty(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("c.yaml", []byte(`repositories:
  nas: {url: /srv/restic, password_file: /etc/p}
targets:
  usb: {path: /mnt/usb}
plans:
  home: {subvolumes: [/home], repository: nas, send_to: [usb], target_retention: {}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Plans["home"]; p.TargetRetention != (KeepSnapshots{}) {
		t.Errorf("TargetRetention %+v; want {} (only the newest copy kept)", p.TargetRetention)
	}
}

// TestStrictTargetPath: a path target is a directory root writes into
// (the plans' directories and the received copies): Load refuses one the
// user owns, or below a directory others may write, naming the key, its
// line and the fix; root's is accepted, and so is one not made yet where
// only root could make it (a disk not mounted at the moment).
func TestStrictTargetPath(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(s *strictTree) string // returns the target's path
		want  string                     // a regular expression, TREE for the tree; "": accepted
	}{
		{"root's", func(s *strictTree) string { return s.mkdir("usb/subvault", 0o700, 0) }, ""},
		{"not made yet", func(s *strictTree) string { s.mkdir("mnt", 0o755, 0); return s.path("mnt/usb/subvault") }, ""},
		{"the user's", func(s *strictTree) string { return s.mkdir("usb/subvault", 0o755, nobody) },
			`(?m)^TREE/config\.yaml:\d+: targets\.usb\.path: TREE/usb/subvault: owned by uid 65534, who could change it; expected a directory only root can write.*\(fix: chown root: TREE/usb/subvault\)$`},
		{"below a directory all may write", func(s *strictTree) string {
			s.mkdir("media", 0o777, 0)
			return s.mkdir("media/subvault", 0o700, 0)
		}, `(?m)^TREE/config\.yaml:\d+: targets\.usb\.path: TREE/media/subvault: the directory TREE/media may be written by its group and others \(mode 0777\)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStrictTree(t)
			target := c.setup(s)
			conf := strictConfig(s, "    password_command: /bin/echo pw", "    send_to: [usb]") +
				"targets:\n  usb:\n    path: " + target + "\n"
			path := s.file("config.yaml", conf, 0o644, 0)
			_, err := Load(path)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused:\n%v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			re := regexp.MustCompile(strings.ReplaceAll(c.want, "TREE", regexp.QuoteMeta(s.dir)))
			if !re.MatchString(err.Error()) {
				t.Errorf("error does not match %s:\n%v", re, err)
			}
		})
	}
}
