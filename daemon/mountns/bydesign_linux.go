package mountns

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// systemdInaccessible is where PID 1 keeps the empty nodes (mode 0000) that
// a unit's sandbox binds over the paths it hides: InaccessiblePaths=,
// ProtectKernelModules= (/usr/lib/modules), ProtectKernelLogs= (/proc/kmsg).
// In a container it is a symlink to the nodes the container manager made,
// /run/host/inaccessible. A variable for the tests.
var systemdInaccessible = "/run/systemd/inaccessible"

// inaccessibleNodes are the nodes in systemdInaccessible, one per file type
// (systemd's mode_to_inaccessible_node).
var inaccessibleNodes = []string{"dir", "reg", "chr", "blk", "fifo", "sock"}

// byDesign decides which host mounts below a Target the namespace leaves out
// because the snapshot itself shows what belongs at their path:
//
//   - a bind of the Target's own subvolume, such as those systemd puts over
//     /usr, /etc (ProtectSystem=), /tmp and /var/tmp (PrivateTmp=, from
//     /tmp/systemd-private-*/tmp: another directory of the same subvolume).
//     Brought back, it would put the live directory, or the service's own
//     /tmp, into the archive in place of the snapshot's;
//   - one of systemd's inaccessible nodes, as over /usr/lib/modules
//     (ProtectKernelModules=) or an InaccessiblePaths= path: a mount whose
//     root is the very inode /run/systemd/inaccessible/NODE resolves to.
//     Brought back, it would put an empty directory into the archive.
//
// What it cannot be sure of, it brings back as before.
type byDesign struct {
	byID map[uint64]*mountinfo.Info
	// targets caches each Target's identity; nodes maps the identity of
	// each inaccessible node to its path, loaded on first use.
	targets map[string]*unix.Statx_t
	nodes   map[fileID]string
}

type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Statx_t) fileID {
	return fileID{dev: unix.Mkdev(st.Dev_major, st.Dev_minor), ino: st.Ino}
}

func newByDesign(mounts []*mountinfo.Info) *byDesign {
	d := &byDesign{byID: map[uint64]*mountinfo.Info{}, targets: map[string]*unix.Statx_t{}}
	for _, m := range mounts {
		d.byID[uint64(m.ID)] = m
	}
	return d
}

// statMount returns the identity of what path shows and the id of the mount
// it shows it through. It triggers no automount and asks no network
// filesystem's server for fresh attributes (plan opens the same paths
// anyway).
func statMount(path string) (*unix.Statx_t, error) {
	var st unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_NO_AUTOMOUNT | unix.AT_STATX_DONT_SYNC
	if err := unix.Statx(unix.AT_FDCWD, path, flags, unix.STATX_TYPE|unix.STATX_INO|unix.STATX_MNT_ID, &st); err != nil {
		return nil, err
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return nil, fmt.Errorf("%s: the kernel gave no mount id", path)
	}
	return &st, nil
}

// leaveOut is plan's leaveOut: the reason to leave out the mount that
// mountPoint shows, below target, or "" to bring it back.
func (d *byDesign) leaveOut(mountPoint, target string) string {
	// What the path shows is decided by the mount it resolves to, which
	// need not be one mounted there: a mount hidden by a bind over a
	// directory above it (not recursive) is still listed.
	st, err := statMount(mountPoint)
	if err != nil {
		return ""
	}
	top, ok := d.byID[st.Mnt_id]
	if !ok {
		return ""
	}
	if isInaccessibleRoot(top.Root) {
		if node, ok := d.inaccessible()[idOf(st)]; ok {
			return fmt.Sprintf("it is systemd's inaccessible node %s (InaccessiblePaths=, ProtectKernelModules=), not what is there: the snapshot shows that", node)
		}
	}
	// btrfs gives every subvolume its own device number, so a mount of
	// the Target's device is a bind of a directory of that very subvolume,
	// which the snapshot holds at this path.
	if top.FSType == "btrfs" {
		t, err := d.target(target)
		if err == nil && idOf(st).dev == idOf(t).dev {
			return fmt.Sprintf("it shows subvolume %s's own files, through a bind of %s (ProtectSystem=, PrivateTmp= or another): the snapshot has them as they were", target, top.Root)
		}
	}
	return ""
}

func (d *byDesign) target(path string) (*unix.Statx_t, error) {
	if st, ok := d.targets[path]; ok {
		return st, nil
	}
	st, err := statMount(path)
	if err != nil {
		return nil, err
	}
	d.targets[path] = st
	return st, nil
}

// inaccessible maps the identity of each of systemd's inaccessible nodes
// that exists to its path.
func (d *byDesign) inaccessible() map[fileID]string {
	if d.nodes != nil {
		return d.nodes
	}
	d.nodes = map[fileID]string{}
	for _, n := range inaccessibleNodes {
		p := filepath.Join(systemdInaccessible, n)
		if st, err := statMount(p); err == nil {
			d.nodes[idOf(st)] = p
		}
	}
	return d.nodes
}

// isInaccessibleRoot reports whether a mount's root may be one of systemd's
// inaccessible nodes: /systemd/inaccessible/dir on the /run tmpfs,
// /host/inaccessible/dir in a container (the symlink resolved),
// /run/systemd/inaccessible/dir where /run is no mount of its own. Only the
// node's identity settles it.
func isInaccessibleRoot(root string) bool {
	dir, node := filepath.Split(root)
	return strings.HasSuffix(dir, "/inaccessible/") && slices.Contains(inaccessibleNodes, node)
}
