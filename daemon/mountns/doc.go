// Package mountns runs a program in a private mount namespace in which each
// read-only snapshot is bind-mounted over its subvolume's original path, so
// restic records the original paths and finds its parent archive while the
// host never sees a mount.
//
// The runner owns one goroutine: it locks its OS thread, unshares the mount
// namespace, makes / a recursive slave (host unmounts reach it, its mounts
// reach nothing), mounts, runs fn, which starts the program and waits for it,
// and never unlocks the thread, which then dies with the goroutine and takes
// the namespace with it. Nothing else may run on it.
//
// How the mounts are made, and why:
//
//   - Every snapshot, every host mount a snapshot covers and every KeepHost
//     path is cloned with open_tree(2) before anything is mounted, because a
//     snapshot over / or /srv changes what /home/.snaps/x or
//     /srv/.snaps/db resolve to. The clones are attached with move_mount(2),
//     shallowest path first; /proc/self/fd paths are not used, since /proc
//     itself is covered once / is.
//   - Each snapshot is made read-only with mount_setattr(2) before it is
//     attached, which leaves nosuid, nodev and noexec as they were.
//   - A mount over / is invisible to lookups that start at the root the
//     thread already holds, so after it the thread chroots into the new
//     mount (CLONE_NEWNS gave it its own root and working directory).
//   - Host mounts below a Target (/proc, /dev, /tmp under /) are bound back
//     recursively onto their paths; one whose mount point is not in the
//     snapshot is reported through Options.Skipped and left out.
//   - Two kinds of host mount are left out on purpose, logged at debug level
//     only, because the snapshot shows what belongs at their path: a bind
//     of a directory of the Target's own subvolume (same btrfs device
//     number: each subvolume has its own), such as systemd's read-only
//     binds over /usr and /etc (ProtectSystem=) and its private /tmp and
//     /var/tmp (PrivateTmp=, from /tmp/systemd-private-*/tmp); and systemd's
//     inaccessible nodes (the very inode /run/systemd/inaccessible/NODE
//     resolves to: mountinfo root /systemd/inaccessible/dir on a host,
//     /host/inaccessible/dir in a container), as over /usr/lib/modules
//     (ProtectKernelModules=) and InaccessiblePaths=. Mounts below one left
//     out are decided on their own: a filesystem of its own below /usr
//     still comes back. Options.Logger gets them at debug level.
//   - Before fn runs, each Target must show its snapshot's device and inode.
//
// Linux 5.12 or later (mount_setattr). Importing the package locks the main
// goroutine to the process's startup thread (an init function, in
// mainthread.go, says why): /proc/self shows that thread's mounts, so no
// namespace may ever land on it.
package mountns
