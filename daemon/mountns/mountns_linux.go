package mountns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Bind mounts a snapshot over the path of the subvolume it was taken of.
type Bind struct {
	// Source is a read-only snapshot, e.g. /home/.subvault-snapshots/x.
	Source string
	// Dir, when set, is Source opened and checked by the caller: the
	// mount is cloned from this descriptor (open_tree with AT_EMPTY_PATH)
	// and Source is only named in messages, so a rename or a link planted
	// at Source's path after the check changes nothing.
	Dir *os.File
	// Target is the subvolume's original absolute path, e.g. /home.
	Target string
	// Writable mounts Source as it is rather than read-only: a restore's
	// staging directory, which restic writes into.
	Writable bool
}

// Options says what the backup's namespace shows.
type Options struct {
	Binds []Bind
	// KeepHost are paths that must look exactly as on the host inside the
	// namespace even when a bind covers them (restic's cache dir, a local
	// repository, TMPDIR, the password file's dir): each is bound back,
	// recursively and writable as on the host, from the host view. Each must
	// exist in the snapshot that covers it. A path no snapshot covers needs
	// nothing and gets no mount.
	KeepHost []string
	// Skipped is told of each host mount below a Target that could not be
	// bound back, most often because its mount point does not exist in the
	// snapshot; the backup goes on without it. It is called on the
	// namespace's thread, before fn. When nil, each is logged as a warning.
	// Mounts left out on purpose (a bind of the Target's own subvolume,
	// systemd's inaccessible nodes: see the package documentation) are not
	// reported here; they are logged at debug level.
	Skipped func(mountpoint string, err error)
	// Logger logs what Skipped does not take, and the mounts left out on
	// purpose; nil means slog.Default().
	Logger *slog.Logger
	// Empty, with no Binds and no KeepHost, makes a namespace that starts
	// as the host's view: fn mounts what it needs there itself (the onsite
	// tier mounts a target's filesystem and binds its receiving directory).
	// Without it, no Binds is an error.
	Empty bool
}

// Run runs fn in a new goroutine locked to its OS thread, in a new mount
// namespace in which every Bind is mounted read-only, and waits for it.
//
// fn must start and wait for its child processes itself (os/exec in the same
// goroutine), because only that thread is in the namespace; a goroutine fn
// starts sees the host. The thread is never unlocked, so it exits with the
// goroutine and the namespace dies with it (or with the last child fn left
// running). Run returns fn's error, a panic in fn as an error, or a setup
// error that says which mount failed and why; if ctx is done before setup,
// ctx's error.
//
// Mounts are made shallowest Target first. Each snapshot is opened before
// any mount, so a snapshot that lives below another Target (/home/.snaps/x
// when / is also a Target) is still the host's. Host mounts a snapshot covers
// (/proc, /dev, /tmp under /; a tmpfs under /srv) are bound back onto their
// paths, except binds of the Target's own subvolume and systemd's
// inaccessible nodes, whose paths the snapshot shows; then the KeepHost
// paths. Before fn runs, each Target is checked to show its snapshot.
//
// The process's startup thread must never enter a backup's namespace:
// /proc/self shows that thread's mounts. This package's init locks it to the
// main goroutine (mainthread.go), and Run keeps off it even when it is
// free.
func Run(ctx context.Context, opts Options, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Checked here too, so a bad request costs no thread.
	if opts.Empty && (len(opts.Binds) > 0 || len(opts.KeepHost) > 0) {
		return errors.New("cannot run in a private namespace: Empty with binds or host paths")
	}
	if len(opts.Binds) == 0 && !opts.Empty {
		return errors.New("cannot run in a backup's namespace: no snapshot to mount")
	}
	if err := validate(opts.Binds, opts.KeepHost); err != nil {
		return err
	}
	result := make(chan error, 1)
	go inNamespace(ctx, opts, fn, nil, result)
	return <-result
}

// inNamespace is the goroutine that owns the namespace. It closes locked,
// if given, once it holds its thread.
func inNamespace(ctx context.Context, opts Options, fn func() error, locked chan<- struct{}, result chan<- error) {
	// Never unlocked: the thread is changed for good, so the runtime must
	// end it when this goroutine returns rather than reuse it.
	runtime.LockOSThread()
	if locked != nil {
		close(locked)
	}
	if unix.Gettid() == unix.Getpid() {
		// The main thread is free: the program unlocked what this
		// package's init locked. Its mounts are what /proc/self shows,
		// and a locked goroutine that ends there parks it for good: hold
		// it while a new goroutine locks another thread, then give it
		// back unchanged.
		other := make(chan struct{})
		go inNamespace(ctx, opts, fn, other, result)
		<-other
		runtime.UnlockOSThread()
		return
	}
	// Goexit (t.FailNow in a test) skips the assignment below but not the
	// deferred send: Run always returns.
	err := errors.New("the backup's namespace goroutine exited early: runtime.Goexit in fn")
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the backup's namespace: %v\n%s", r, debug.Stack())
		}
		result <- err
	}()
	err = setupAndRun(ctx, opts, fn)
}

func setupAndRun(ctx context.Context, opts Options, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := setup(opts); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn()
}

// opened is a step with its mount tree cloned before any mount.
type opened struct {
	step
	tree int // detached clone from open_tree, or -1 for a skipped submount
	stat unix.Stat_t
}

// setup makes and fills the namespace on the calling thread.
func setup(opts Options) error {
	cwd, err := unix.Getwd()
	if err != nil {
		cwd = "/"
	}
	// A bind given as a descriptor is cloned while this thread is still in
	// the namespace its mount belongs to: open_tree refuses a mount of
	// another namespace, and the clone, detached, can be attached in the
	// new one.
	cloned := map[*os.File]int{}
	defer func() {
		for _, tree := range cloned {
			unix.Close(tree)
		}
	}()
	for _, b := range opts.Binds {
		if b.Dir == nil {
			continue
		}
		tree, err := unix.OpenTree(int(b.Dir.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
		if err != nil {
			return openError(step{kind: stepSnapshot, source: b.Source, path: b.Target}, err)
		}
		cloned[b.Dir] = tree
	}
	// CLONE_NEWNS also unshares this thread's root and working directory
	// (CLONE_FS), which the chroot below relies on.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("cannot make the backup's mount namespace: needs root (CAP_SYS_ADMIN): %w", err)
		}
		return fmt.Errorf("cannot make the backup's mount namespace: %w", err)
	}
	// Slave, not private: a filesystem the host unmounts goes here too
	// rather than being pinned by this namespace; nothing goes the other way.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("cannot make / a slave mount in the backup's namespace: %w", err)
	}
	mounts, err := namespaceMounts()
	if err != nil {
		return fmt.Errorf("cannot list the mounts of the backup's namespace: %w", err)
	}
	points := make([]string, len(mounts))
	for i, m := range mounts {
		points[i] = m.Mountpoint
	}
	steps, left, err := plan(opts.Binds, opts.KeepHost, points, newByDesign(mounts).leaveOut)
	if err != nil {
		return err
	}
	for _, l := range left {
		// Expected wherever systemd sandboxes the daemon: not a warning.
		opts.logger().Debug("host mount left out of the backup's namespace", "mountpoint", l.path, "subvolume", l.under, "reason", l.reason)
	}

	// Everything is opened before anything is mounted: once a snapshot
	// covers / (or /srv), a later source's path (/home/.snaps/x,
	// /srv/.snaps/db) would resolve inside that snapshot instead.
	trees := make([]opened, 0, len(steps))
	defer func() {
		for _, o := range trees {
			if o.tree >= 0 {
				unix.Close(o.tree)
			}
		}
	}()
	for _, s := range steps {
		if s.dir != nil {
			// open, from the clone made before the unshare; the trees
			// closed below own it from here.
			s.clone = cloned[s.dir]
			delete(cloned, s.dir)
		}
		o, err := open(s)
		if err != nil {
			if s.kind == stepSubmount {
				skipped(opts, s.path, err)
				continue
			}
			return err
		}
		trees = append(trees, o)
	}

	for _, o := range trees {
		if err := attach(o); err != nil {
			if o.kind == stepSubmount && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)) {
				skipped(opts, o.path, fmt.Errorf("its mount point is not in the snapshot over %s: %w", o.under, err))
				continue
			}
			return attachError(o, err)
		}
	}

	for _, o := range trees {
		if o.kind != stepSnapshot {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(o.path, &st); err != nil {
			return fmt.Errorf("cannot check snapshot %s over %s in the backup's namespace: %w", o.source, o.path, err)
		}
		if st.Dev != o.stat.Dev || st.Ino != o.stat.Ino {
			return fmt.Errorf("cannot mount snapshot %s over %s in the backup's namespace: %s shows device %d inode %d there, not the snapshot's device %d inode %d",
				o.source, o.path, o.path, st.Dev, st.Ino, o.stat.Dev, o.stat.Ino)
		}
	}
	// The working directory, like the root, still pointed into the host's
	// tree: enter the same path in the namespace's.
	if err := unix.Chdir(cwd); err != nil {
		if err := unix.Chdir("/"); err != nil {
			return fmt.Errorf("cannot change to / in the backup's namespace: %w", err)
		}
	}
	return nil
}

// namespaceMounts lists the mounts of the namespace the calling thread has
// just unshared. /proc/thread-self, not /proc/self: the process's main
// thread stays in the host's namespace, and the goroutine is locked, so
// the thread that reads is the one that unshared.
func namespaceMounts() ([]*mountinfo.Info, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read only
	return mountinfo.GetMountsFromReader(f, nil)
}

// open clones the mount tree a step mounts, as a detached mount.
func open(s step) (opened, error) {
	o := opened{step: s, tree: -1}
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if s.kind != stepSnapshot {
		flags |= unix.AT_RECURSIVE
	}
	if s.kind == stepSnapshot {
		// The Target must exist in the host view; whether it exists in a
		// shallower snapshot shows when it is mounted.
		var st unix.Stat_t
		if err := unix.Stat(s.path, &st); err != nil {
			if s.dir != nil {
				unix.Close(s.clone)
			}
			return o, fmt.Errorf("cannot mount snapshot %s over %s in the backup's namespace: target: %w", s.source, s.path, err)
		}
	}
	tree := s.clone
	if s.dir == nil {
		var err error
		if tree, err = unix.OpenTree(unix.AT_FDCWD, s.source, flags); err != nil {
			return o, openError(s, err)
		}
	}
	o.tree = tree
	if err := unix.Fstat(tree, &o.stat); err != nil {
		unix.Close(tree)
		o.tree = -1
		return o, openError(s, err)
	}
	if s.kind == stepSnapshot {
		if o.stat.Mode&unix.S_IFMT != unix.S_IFDIR {
			unix.Close(tree)
			o.tree = -1
			return o, openError(s, unix.ENOTDIR)
		}
		if s.writable {
			return o, nil
		}
		// Read-only before it is attached, with the mount's other flags
		// (nosuid, nodev, noexec, atime) left as they were.
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			unix.Close(tree)
			o.tree = -1
			return o, fmt.Errorf("cannot mount snapshot %s over %s in the backup's namespace: make it read-only: %w", s.source, s.path, err)
		}
	}
	return o, nil
}

func openError(s step, err error) error {
	switch s.kind {
	case stepSnapshot:
		return fmt.Errorf("cannot mount snapshot %s over %s in the backup's namespace: %w", s.source, s.path, err)
	case stepSubmount:
		return fmt.Errorf("cannot open host mount %s: %w", s.path, err)
	default:
		return fmt.Errorf("cannot keep %s as on the host in the backup's namespace: %w", s.path, err)
	}
}

// attach mounts an opened step on its path.
func attach(o opened) error {
	if err := unix.MoveMount(o.tree, "", unix.AT_FDCWD, o.path, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return err
	}
	if o.path == "/" {
		// A mount over / is not seen by lookups that start at the root
		// this thread already holds; make the new mount the root.
		if err := unix.Fchdir(o.tree); err != nil {
			return fmt.Errorf("enter it: %w", err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("make it the root: %w", err)
		}
	}
	return nil
}

func attachError(o opened, err error) error {
	switch o.kind {
	case stepSnapshot:
		return fmt.Errorf("cannot mount snapshot %s over %s in the backup's namespace: %w", o.source, o.path, err)
	case stepSubmount:
		return fmt.Errorf("cannot bind host mount %s back below the snapshot over %s in the backup's namespace: %w", o.path, o.under, err)
	default:
		return fmt.Errorf("cannot keep %s as on the host in the backup's namespace (below the snapshot over %s): %w", o.path, o.under, err)
	}
}

func skipped(opts Options, mountpoint string, err error) {
	if opts.Skipped != nil {
		opts.Skipped(mountpoint, err)
		return
	}
	opts.logger().Warn("host mount left out of the backup's namespace", "mountpoint", mountpoint, "err", err)
}

func (opts Options) logger() *slog.Logger {
	if opts.Logger != nil {
		return opts.Logger
	}
	return slog.Default()
}
