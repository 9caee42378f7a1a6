// Package btrfs does what subvault needs from btrfs: it tells subvolumes from
// plain directories, makes read-only and writable snapshots, flips the
// read-only flag, reads a subvolume's identity (id, UUID, parent UUID,
// generation), finds the mount that holds a path, lists and deletes the
// snapshots subvault made, names them, and selects which to keep. For a
// rollback it lists the subvolumes nested in one, swaps two atomically,
// moves one, tells where one is mounted, snapshots next to a mounted one
// through a detached mount of the top level, and sets the default one. For
// the onsite tier it finds the block device that holds a filesystem UUID
// (FindDevice, BlockDevices): sysfs listed, udev's database or the
// superblock read, device nodes opened only as the block device sysfs names.
//
// Every operation on a filesystem is an ioctl, through github.com/containerd/btrfs/v2 where it
// does the job and through golang.org/x/sys/unix where it does not (the
// subvolume flags, the filesystem id, the per-subvolume info, a
// non-recursive delete, the nested subvolumes, a snapshot by descriptor and
// the default subvolume); nothing here runs the btrfs command.
//
// Delete refuses anything whose name does not parse as a subvault snapshot
// name (see ParseName), so a bug upstream cannot remove a user's subvolume.
package btrfs
