package rollback

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/shell"
)

// Where a rollback of a mounted subvolume reads how the machine mounts it;
// tests point them elsewhere.
var (
	fstabPath   = "/etc/fstab"
	cmdlinePath = "/proc/cmdline"
)

type prepareFacts struct {
	subvolume, mountPoint, device, snapshot string
	oldPath, newPath                        string
	oldID, newID                            uint64
	nested                                  []btrfs.Nested
	readOnly                                map[string]bool // nested ones, by Rel
	placeholder                             map[string]bool // an empty directory waits for it in the copy
	noDir                                   map[string]bool // its directory is not in the copy
	boot                                    bootConfig
	dryRun, setDefault                      bool
}

// prepareMessage says what was prepared, what to run to boot it, and how
// to undo it.
func prepareMessage(f prepareFacts) string {
	var b strings.Builder
	id := func(n uint64) string {
		if n == 0 {
			return "NEWID" // a dry run made nothing, so has no id
		}
		return strconv.FormatUint(n, 10)
	}
	verb := "Made"
	if f.dryRun {
		verb = "Would make"
	}
	fmt.Fprintf(&b, "%s is mounted at %s, so it is not replaced under the programs that use it: it stays as it is (%s, id %d on %s), and is the way back.\n",
		f.subvolume, f.mountPoint, f.oldPath, f.oldID, f.device)
	fmt.Fprintf(&b, "%s %s (id %s), a writable copy of snapshot %s, next to it; it is mounted nowhere.\n", verb, f.newPath, id(f.newID), f.snapshot)
	b.WriteString("To boot it:\n")
	oldValue := f.oldPath
	switch {
	case f.boot.fstabSubvol != "" || f.boot.fstabSubvolID != "" || f.boot.cmdlineSubvol != "" || f.boot.cmdlineSubvolID != "":
		if f.boot.fstabSubvol != "" {
			oldValue = f.boot.fstabSubvol
			fmt.Fprintf(&b, "  in %s, on the line of %s, change subvol=%s to subvol=%s\n", f.boot.fstab, f.mountPoint, oldValue, styleLike(oldValue, f.newPath))
		}
		if f.boot.fstabSubvolID != "" {
			fmt.Fprintf(&b, "  in %s, on the line of %s, change subvolid=%s to subvolid=%s\n", f.boot.fstab, f.mountPoint, f.boot.fstabSubvolID, id(f.newID))
		}
		if f.boot.cmdlineSubvol != "" {
			fmt.Fprintf(&b, "  in the boot loader's kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub; or /boot/loader/entries/*.conf), change rootflags=...subvol=%s to subvol=%s\n",
				f.boot.cmdlineSubvol, styleLike(f.boot.cmdlineSubvol, f.newPath))
		}
		if f.boot.cmdlineSubvolID != "" {
			fmt.Fprintf(&b, "  in the boot loader's kernel command line, change rootflags=...subvolid=%s to subvolid=%s\n", f.boot.cmdlineSubvolID, id(f.newID))
		}
		b.WriteString("  (on NixOS: fileSystems.\"" + f.mountPoint + "\".options in the configuration, then nixos-rebuild boot)\n")
	case f.boot.inFstab:
		if f.setDefault && !f.dryRun {
			fmt.Fprintf(&b, "  done: %s is mounted without subvol=, so it mounts the default subvolume, and %s (id %s) is the default now\n", f.mountPoint, f.newPath, id(f.newID))
		} else {
			fmt.Fprintf(&b, "  %s is mounted without subvol=, so it mounts the default subvolume: btrfs subvolume set-default %s %s (or subvault rollback --set-default)\n", f.mountPoint, id(f.newID), f.mountPoint)
		}
	default:
		fmt.Fprintf(&b, "  %s is not in %s: wherever it is mounted from (a systemd mount unit, a script), mount subvol=%s (subvolid=%s) instead of subvol=%s;\n",
			f.mountPoint, f.boot.fstab, f.newPath, id(f.newID), f.oldPath)
		fmt.Fprintf(&b, "  if it is mounted without subvol=, make it the default instead: btrfs subvolume set-default %s %s\n", id(f.newID), f.mountPoint)
	}
	b.WriteString("  then reboot.\n")
	if len(f.nested) > 0 {
		fmt.Fprintf(&b, "The subvolumes inside %s are not in the copy (it shows empty directories there); after the reboot, move those you want over from the top level:\n", f.oldPath)
		fmt.Fprintf(&b, "  mount -o subvolid=5 %s /mnt\n", shell.Quote(f.device))
		for _, n := range f.nested {
			src, dst := shell.Quote(filepath.Join("/mnt", f.oldPath, n.Rel)), shell.Quote(filepath.Join("/mnt", f.newPath, n.Rel))
			b.WriteString("  ")
			switch {
			case f.placeholder[n.Rel]:
				fmt.Fprintf(&b, "rmdir %s && ", dst)
			case f.noDir[n.Rel]:
				fmt.Fprintf(&b, "mkdir -p %s && ", shell.Quote(filepath.Dir(filepath.Join("/mnt", f.newPath, n.Rel))))
			}
			if f.readOnly[n.Rel] {
				// A read-only subvolume cannot change directories.
				fmt.Fprintf(&b, "btrfs property set %s ro false && mv %s %s && btrfs property set %s ro true\n", src, src, dst, dst)
			} else {
				fmt.Fprintf(&b, "mv %s %s\n", src, dst)
			}
		}
		b.WriteString("  umount /mnt\n")
	}
	fmt.Fprintf(&b, "To undo before the reboot: ")
	switch {
	case f.dryRun:
		b.WriteString("nothing to undo, nothing was made.\n")
	default:
		if f.setDefault {
			fmt.Fprintf(&b, "btrfs subvolume set-default %d %s; ", f.oldID, f.mountPoint)
		}
		fmt.Fprintf(&b, "mount -o subvolid=5 %s /mnt && btrfs subvolume delete %s && umount /mnt\n", shell.Quote(f.device), shell.Quote("/mnt"+f.newPath))
	}
	fmt.Fprintf(&b, "To go back after the reboot: point the boot at %s again (subvol=%s, subvolid=%d, or btrfs subvolume set-default %d %s), and reboot.",
		f.oldPath, oldValue, f.oldID, f.oldID, f.mountPoint)
	return b.String()
}

// styleLike writes fsPath the way the configuration wrote its subvol=
// value: "@" or "/@".
func styleLike(configured, fsPath string) string {
	if strings.HasPrefix(configured, "/") {
		return fsPath
	}
	return strings.TrimPrefix(fsPath, "/")
}

// bootConfig is how the machine mounts a mount point at boot.
type bootConfig struct {
	fstab                          string
	inFstab                        bool
	fstabSubvol, fstabSubvolID     string
	cmdlineSubvol, cmdlineSubvolID string
}

// bootSetup reads /etc/fstab's line of mountPoint and, for /, the kernel
// command line's rootflags=.
func bootSetup(mountPoint string) bootConfig {
	b := bootConfig{fstab: fstabPath}
	if data, err := os.ReadFile(fstabPath); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 || strings.HasPrefix(fields[0], "#") || btrfs.UnescapeOctal(fields[1]) != mountPoint {
				continue
			}
			b.inFstab = true
			if len(fields) >= 4 {
				b.fstabSubvol, b.fstabSubvolID = subvolOptions(fields[3])
			}
		}
	}
	if mountPoint == "/" {
		if data, err := os.ReadFile(cmdlinePath); err == nil {
			for _, arg := range strings.Fields(string(data)) {
				if v, ok := strings.CutPrefix(arg, "rootflags="); ok {
					b.cmdlineSubvol, b.cmdlineSubvolID = subvolOptions(v)
				}
			}
		}
	}
	return b
}

func subvolOptions(options string) (subvol, subvolID string) {
	for _, opt := range strings.Split(options, ",") {
		if v, ok := strings.CutPrefix(opt, "subvol="); ok {
			subvol = v
		}
		if v, ok := strings.CutPrefix(opt, "subvolid="); ok {
			subvolID = v
		}
	}
	return subvol, subvolID
}
