// Package devices watches for block devices that appear, so that the daemon
// can start a due send when the disk of a UUID target is plugged in (see
// docs/architecture.md, "Who owns what").
//
// It polls /sys/class/block (no udev, no netlink: the daemon may run where
// neither is, and a poll every few seconds costs a directory listing) and
// reads the filesystem UUID of a device only the first time it sees it, so
// a known device gets no I/O however long the daemon runs.
package devices

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/subvault/subvault/btrfs"
)

// key tells one appearance of a device from another: a loop device attached
// again, or a disk's medium changed, gets a new diskseq (or, on kernels
// without one, a new size as often as not).
type key struct {
	name, dev string
	size, seq uint64
}

func keyOf(d btrfs.BlockDevice) key {
	return key{name: d.Name, dev: d.Dev, size: d.Size, seq: d.DiskSeq}
}

// Watcher remembers the devices seen and what they hold.
type Watcher struct {
	seen map[key]string // → btrfs filesystem UUID, "" for none
	// list and fsUUID are btrfs's, replaced by tests of pure logic.
	list   func() ([]btrfs.BlockDevice, error)
	fsUUID func(btrfs.BlockDevice) (string, error)
}

// New returns a watcher that has seen nothing yet.
func New() *Watcher {
	return &Watcher{
		seen:   map[key]string{},
		list:   btrfs.BlockDevices,
		fsUUID: btrfs.BlockDevice.FSUUID,
	}
}

// Appeared is a device seen for the first time that holds a btrfs
// filesystem.
type Appeared struct {
	UUID string
	// Device is its node, /dev/<name>.
	Device string
}

// Scan lists the block devices, forgets those gone (one that comes back is
// new again), reads the filesystem UUID of each new one, and returns the
// new ones holding a btrfs filesystem. A device that cannot be read counts
// as seen, holding none: it is not read again until it goes and comes back.
func (w *Watcher) Scan() ([]Appeared, error) {
	devs, err := w.list()
	if err != nil {
		return nil, err
	}
	now := make(map[key]bool, len(devs))
	var out []Appeared
	for _, d := range devs {
		k := keyOf(d)
		now[k] = true
		if _, ok := w.seen[k]; ok {
			continue
		}
		uuid := ""
		if d.Probeable() {
			if u, err := w.fsUUID(d); err == nil {
				uuid = u
			}
		}
		w.seen[k] = uuid
		if uuid != "" {
			out = append(out, Appeared{UUID: uuid, Device: d.Path()})
		}
	}
	for k := range w.seen {
		if !now[k] {
			delete(w.seen, k)
		}
	}
	return out, nil
}

// Watch scans every interval until ctx ends and calls found, from its own
// goroutine, for each device that appeared holding one of the filesystem
// UUIDs wanted returns at that moment (asked at each scan, so a reloaded
// configuration counts; compared without case, and found is given the
// spelling wanted returned). Every device present when it starts is new to it:
// found is called for wanted ones already plugged in. A failed listing is
// tried again at the next interval.
func Watch(ctx context.Context, interval time.Duration, wanted func() []string, found func(uuid, dev string)) {
	w := New()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if appeared, err := w.Scan(); err == nil && len(appeared) > 0 {
			want := wanted()
			for _, a := range appeared {
				i := slices.IndexFunc(want, func(u string) bool { return strings.EqualFold(strings.TrimSpace(u), a.UUID) })
				if i >= 0 {
					found(want[i], a.Device)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
