package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

// The NixOS module in packaging/nixos is checked with nix-instantiate alone:
// no nixpkgs, no daemon, no store. `--store dummy://` keeps nix from making
// /nix, and the state, configuration and cache directories are the test's.

const (
	nixosModule   = "../../packaging/nixos/module.nix"
	nixosSettings = "../../packaging/nixos/example-settings.nix"
)

func nixInstantiate(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := testutil.RequireCommand(t, "nix-instantiate", "nix-bin")
	_, statErr := os.Stat("/nix")
	hadNix := statErr == nil

	home := t.TempDir()
	cmd := exec.Command(bin, append([]string{"--store", "dummy://"}, args...)...)
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CACHE_HOME="+filepath.Join(home, "cache"),
		"NIX_STATE_DIR="+filepath.Join(home, "state"),
		"NIX_LOG_DIR="+filepath.Join(home, "log"),
		"NIX_CONF_DIR="+filepath.Join(home, "conf"), // no /etc/nix/nix.conf
		"NIX_PATH=",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix-instantiate %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if _, err := os.Stat("/nix"); err == nil && !hadNix {
		t.Errorf("nix-instantiate %s made /nix on this machine; it must leave nothing behind", strings.Join(args, " "))
	}
	return stdout.Bytes()
}

func TestNixOSModuleParses(t *testing.T) {
	nixInstantiate(t, "--parse", nixosModule)
	nixInstantiate(t, "--parse", nixosSettings)
}

// The example is written as Nix, rendered to JSON (which YAML reads as it
// is; the module renders YAML from the same value), and must be a
// configuration the daemon accepts.
func TestNixOSExampleSettingsPassCheckConfig(t *testing.T) {
	rendered := nixInstantiate(t, "--eval", "--strict", "--json", nixosSettings)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, rendered, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "check-config", "--config", path)
	if code != exitOK {
		t.Fatalf("check-config of example-settings.nix rendered to JSON: exit %d, want 0\n%s\n%s\nthe file:\n%s", code, out, errOut, rendered)
	}
	for _, want := range []string{"plan system:", "plan postgres:"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config's summary lacks %q:\n%s", want, out)
		}
	}
}

// nixosUnitsExpr evaluates the module with a stand-in for nixpkgs' lib and
// pkgs (only what the module uses) and returns its two units as NixOS
// declares them. Store paths come out as /pkg, /coreutils, ...
const nixosUnitsExpr = `
let
  recursiveUpdate = a: b: a // builtins.mapAttrs (n: v:
    if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v) b;
  lib = {
    mkEnableOption = _: { };
    mkOption = _: { };
    literalExpression = s: s;
    types.package = "package";
    types.path = "path";
    mkIf = cond: value: if cond then value else { };
    mkMerge = builtins.foldl' recursiveUpdate { };
    optional = cond: x: if cond then [ x ] else [ ];
    optionalAttrs = cond: attrs: if cond then attrs else { };
    concatStringsSep = builtins.concatStringsSep;
    escapeShellArg = s: "'" + s + "'";
  };
  pkgs = {
    formats.yaml = _: { type = "yaml"; generate = name: value: { outPath = "/store/${name}"; inherit value; }; };
    writeText = name: _: "/store/${name}";
    runCommand = name: _: _: "/store/${name}";
    coreutils = "/coreutils";
    restic = "/restic";
    btrfs-progs = "/btrfs-progs";
  };
  config = {
    services.subvault = {
      enable = true; package = "/pkg"; notify.enable = true; reset.enable = true;
      settings = {
        repositories.nas = { url = "rest:https://user:secret@nas/"; password_file = "/etc/nas.pass"; };
        settings = { state_dir = "/persist/subvault"; cache_dir = "/var/cache/x"; };
        reset.subvolumes = [ { path = "/"; persist = [ "/etc/machine-id" "/persist/subvault" ]; } ];
      };
    };
    systemd.package = "/systemd";
    boot.initrd.systemd.enable = true;
    fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=root" "compress=zstd" ]; };
  };
  evaluated = (import MODULE) { inherit lib pkgs config; };
in {
  system = evaluated.config.systemd.services.subvault;
  user = evaluated.config.systemd.user.services.subvault-notify;
  initrd = evaluated.config.boot.initrd.systemd.services.subvault-reset;
  initrdConfig = evaluated.config.boot.initrd.systemd.contents."/etc/subvault/config.yaml".source.value;
  initrdStorePaths = evaluated.config.boot.initrd.systemd.storePaths;
  assertions = map (a: a.assertion) evaluated.config.assertions;
  target = evaluated.config.systemd.services."subvault-target@";
  udev = evaluated.config.services.udev.packages;
}
`

// nixosUnit is what the module declares for one unit.
type nixosUnit struct {
	Description   string         `json:"description"`
	Documentation []string       `json:"documentation"`
	After         []string       `json:"after"`
	Before        []string       `json:"before"`
	Wants         []string       `json:"wants"`
	Requires      []string       `json:"requires"`
	PartOf        []string       `json:"partOf"`
	WantedBy      []string       `json:"wantedBy"`
	Aliases       []string       `json:"aliases"`
	Path          []string       `json:"path"`
	UnitConfig    map[string]any `json:"unitConfig"`
	ServiceConfig map[string]any `json:"serviceConfig"`
	Script        string         `json:"script"`
}

// directives renders the unit as its unit file's sections would hold it:
// section -> key -> value, normalized.
func (u nixosUnit) directives() map[string]map[string]string {
	sections := map[string]map[string]string{"Unit": {}, "Service": {}, "Install": {}}
	set := func(section, key string, lines []string) {
		if len(lines) > 0 {
			sections[section][key] = normalizeDirective(key, lines)
		}
	}
	if u.Description != "" {
		set("Unit", "Description", []string{u.Description})
	}
	set("Unit", "Documentation", u.Documentation)
	set("Unit", "After", u.After)
	set("Unit", "Before", u.Before)
	set("Unit", "Wants", u.Wants)
	set("Unit", "Requires", u.Requires)
	set("Unit", "PartOf", u.PartOf)
	for k, v := range u.UnitConfig {
		set("Unit", k, nixLines(v))
	}
	for k, v := range u.ServiceConfig {
		set("Service", k, nixLines(v))
	}
	set("Install", "WantedBy", u.WantedBy)
	set("Install", "Alias", u.Aliases)
	return sections
}

// nixLines renders a unitConfig or serviceConfig value as the lines NixOS
// writes for it: a list is one line per element.
func nixLines(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case bool:
		return []string{strconv.FormatBool(v)}
	case float64:
		return []string{strconv.FormatFloat(v, 'f', -1, 64)}
	case []any:
		var lines []string
		for _, e := range v {
			lines = append(lines, nixLines(e)...)
		}
		return lines
	}
	return []string{fmt.Sprint(v)}
}

// normalizeDirective makes one string of a key's lines, equal where they
// mean the same: yes and true; a list on one line or on several (except
// for commands, one a line); and a program's path (/usr/bin/subvault in the
// unit file, a store path in NixOS), of which only the name counts.
func normalizeDirective(key string, lines []string) string {
	var out []string
	for _, line := range lines {
		words := strings.Fields(line)
		for i, w := range words {
			switch strings.ToLower(w) {
			case "yes", "true", "on":
				words[i] = "true"
			case "no", "false", "off":
				words[i] = "false"
			}
		}
		if strings.HasPrefix(key, "Exec") && len(words) > 0 {
			flags := words[0][:len(words[0])-len(strings.TrimLeft(words[0], "-@:+!"))]
			words[0] = flags + filepath.Base(strings.TrimPrefix(words[0], flags))
		}
		out = append(out, strings.Join(words, " "))
	}
	if strings.HasPrefix(key, "Exec") {
		return strings.Join(out, " ; ")
	}
	return strings.Join(out, " ")
}

// unitFileDirectives reads a unit file: section -> key -> its values joined,
// normalized as normalizeDirective does.
func unitFileDirectives(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read only
	lines := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			if lines[section] == nil {
				lines[section] = map[string][]string{}
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot read line %q", path, line)
			}
			key = strings.TrimSpace(key)
			lines[section][key] = append(lines[section][key], strings.TrimSpace(value))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for s, keys := range lines {
		out[s] = map[string]string{}
		for k, values := range keys {
			out[s][k] = normalizeDirective(k, values)
		}
	}
	return out
}

// nixosModuleEval evaluates nixosUnitsExpr on the module.
func nixosModuleEval(t *testing.T) []byte {
	t.Helper()
	module, err := filepath.Abs(nixosModule)
	if err != nil {
		t.Fatal(err)
	}
	expr := strings.Replace(nixosUnitsExpr, "MODULE", module, 1)
	return nixInstantiate(t, "--eval", "--strict", "--json", "--expr", expr)
}

// The module declares its units itself (NixOS wants store paths, not
// /usr/bin): they must say what packaging/'s unit files say, so a change to
// one without the other fails here.
func TestNixOSModuleMirrorsUnitFiles(t *testing.T) {
	rendered := nixosModuleEval(t)
	var units map[string]nixosUnit
	var all map[string]json.RawMessage
	if err := json.Unmarshal(rendered, &all); err != nil {
		t.Fatalf("module's units: %v\n%s", err, rendered)
	}
	units = map[string]nixosUnit{}
	for name, raw := range all {
		switch name {
		case "udev", "initrdConfig", "initrdStorePaths", "assertions":
			continue // not units; TestNixOSResetInTheInitrd checks the initrd's
		}
		var u nixosUnit
		if err := json.Unmarshal(raw, &u); err != nil {
			t.Fatalf("module's unit %s: %v\n%s", name, err, raw)
		}
		units[name] = u
	}
	// The udev rule comes in the package of the module's system files,
	// which installs packaging/udev/90-subvault.rules.
	if got := string(all["udev"]); got != `["/store/subvault-system-files"]` {
		t.Errorf("services.udev.packages = %s, want the module's system files", got)
	}
	// What the daemon runs, looked up in PATH: restic (settings.restic
	// defaults to "restic") and btrfs receive (the onsite tier's sends).
	for _, p := range []string{"/restic", "/btrfs-progs"} {
		if !slices.Contains(units["system"].Path, p) {
			t.Errorf("the daemon's unit has path %q, without %s (the daemon runs it)", units["system"].Path, p)
		}
	}
	if src, err := os.ReadFile(nixosModule); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(string(src), "${../udev/90-subvault.rules} $out/lib/udev/rules.d/90-subvault.rules") {
		t.Errorf("%s does not install ../udev/90-subvault.rules into lib/udev/rules.d", nixosModule)
	}

	for _, c := range []struct{ name, file string }{
		{"system", "../../packaging/subvault.service"},
		{"user", "../../packaging/subvault-notify.service"},
		{"target", "../../packaging/subvault-target@.service"},
	} {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			if _, err := os.Stat(c.file); err != nil {
				testutil.SkipOrFail(t, c.file+" in the tree (the unit the module mirrors)")
			}
			want := unitFileDirectives(t, c.file)
			got := units[c.name].directives()
			for _, section := range []string{"Unit", "Service", "Install"} {
				var diffs []string
				keys := map[string]bool{}
				for k := range want[section] {
					keys[k] = true
				}
				for k := range got[section] {
					keys[k] = true
				}
				for k := range keys {
					w, inFile := want[section][k]
					g, inModule := got[section][k]
					switch {
					case !inModule:
						diffs = append(diffs, fmt.Sprintf("%s=%s is in the unit file, not in the module", k, w))
					case !inFile:
						diffs = append(diffs, fmt.Sprintf("%s=%s is in the module, not in the unit file", k, g))
					case w != g:
						diffs = append(diffs, fmt.Sprintf("%s: the unit file says %q, the module %q", k, w, g))
					}
				}
				slices.Sort(diffs)
				for _, d := range diffs {
					t.Errorf("[%s] %s", section, d)
				}
			}
		})
	}
}

// services.subvault.reset.enable: the initrd's unit says what
// packaging/subvault-reset.service says, but for ExecStart: NixOS's systemd
// initrd mounts the root from its fstab, not root=, so the unit hands
// `subvault reset run` the root of fileSystems."/" before the real command
// line. The initrd holds the reset section and state_dir only (it is in the
// store, readable by all), and the binary.
func TestNixOSResetInTheInitrd(t *testing.T) {
	rendered := nixosModuleEval(t)
	var got struct {
		Initrd           nixosUnit      `json:"initrd"`
		InitrdConfig     map[string]any `json:"initrdConfig"`
		InitrdStorePaths []string       `json:"initrdStorePaths"`
		Assertions       []bool         `json:"assertions"`
	}
	if err := json.Unmarshal(rendered, &got); err != nil {
		t.Fatalf("module: %v\n%s", err, rendered)
	}

	want := unitFileDirectives(t, "../../packaging/subvault-reset.service")
	units := got.Initrd.directives()
	execStart := want["Service"]["ExecStart"]
	delete(want["Service"], "ExecStart")
	for _, section := range []string{"Unit", "Service", "Install"} {
		for k, w := range want[section] {
			if g, ok := units[section][k]; !ok {
				t.Errorf("[%s] %s=%s is in subvault-reset.service, not in the module", section, k, w)
			} else if g != w {
				t.Errorf("[%s] %s: the unit file says %q, the module %q", section, k, w, g)
			}
		}
		for k, g := range units[section] {
			if _, ok := want[section][k]; !ok {
				t.Errorf("[%s] %s=%s is in the module, not in subvault-reset.service", section, k, g)
			}
		}
	}
	if execStart != "subvault reset run" {
		t.Errorf("subvault-reset.service: ExecStart=%s, want subvault reset run", execStart)
	}
	for _, want := range []string{
		`echo 'root=/dev/disk/by-label/nixos rootflags=subvol=root,compress=zstd' "$(cat /proc/cmdline)" > /run/subvault-reset.cmdline`,
		"exec /pkg/bin/subvault reset run --cmdline /run/subvault-reset.cmdline",
	} {
		if !strings.Contains(got.Initrd.Script, want) {
			t.Errorf("the unit's script lacks %q:\n%s", want, got.Initrd.Script)
		}
	}

	config, err := json.Marshal(got.InitrdConfig)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"reset":{"subvolumes":[{"path":"/","persist":["/etc/machine-id","/persist/subvault"]}]},"settings":{"state_dir":"/persist/subvault"}}`; string(config) != want {
		t.Errorf("the initrd's /etc/subvault/config.yaml is %s, want %s", config, want)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	testutil.WriteFile(t, path, string(config))
	if code, out, errOut := runCLI(t, "check-config", "--config", path); code != exitOK {
		t.Errorf("check-config of the initrd's configuration: exit %d\n%s%s", code, out, errOut)
	}
	if !slices.Contains(got.InitrdStorePaths, "/pkg/bin/subvault") {
		t.Errorf("boot.initrd.systemd.storePaths = %q, without /pkg/bin/subvault", got.InitrdStorePaths)
	}
	if len(got.Assertions) != 2 || slices.Contains(got.Assertions, false) {
		t.Errorf("assertions %v: want two, both true (systemd initrd on, settings.reset set)", got.Assertions)
	}
}
