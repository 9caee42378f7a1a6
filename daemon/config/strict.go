package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/subvault/subvault/daemon/shell"
)

// The files a configuration names steer what the daemon does as root: the
// configuration itself, the programs it runs (hooks, password_command,
// restic), the files restic reads (exclude_file) and the secrets (a
// password_file, an env_file), and the directories root writes into (the
// state and cache directories, a local repository). Like sshd's
// StrictModes, each is refused when someone other than root (or the uid
// the daemon runs as) could change it: the file itself, or any directory
// on the way to it, since whoever may write a directory may replace what
// is in it. A directory others may write is allowed only with the sticky
// bit (as /tmp), and then only for an entry root owns. A secret is also
// refused when others may read it.
//
// The walk goes through descriptors, from / down, one component at a time,
// opened without following links and checked with fstat; a symbolic link
// is read and its target walked the same way, so every directory that
// leads to the file is checked, not only those of the path as written.
// Once a file passes, nobody but root can change it or what leads to it,
// so the daemon may use the path afterwards.

// fileRole is what the daemon does with a file the configuration names.
type fileRole int

const (
	roleConfig    fileRole = iota // the configuration: read by the daemon
	roleProgram                   // run as root
	roleRead                      // read by restic (exclude_file)
	roleSecret                    // read by restic, and nobody else may read it
	roleDirectory                 // written into by the daemon or restic
	// roleMetricsDir is settings.metrics.textfile: the daemon writes one
	// file there through the directory's descriptor, never following a
	// link in it (daemon/metrics), so who owns it and the directories
	// above does not matter (Debian's is below /var/lib/prometheus,
	// prometheus's own); but a directory others may write without the
	// sticky bit lets them replace the metrics with their own.
	roleMetricsDir
)

// fileRef is a file the configuration names, and where.
type fileRef struct {
	key  string
	node *yaml.Node // the value in the file; nil for a default
	path string     // absolute; for a program, also a name looked up in PATH
	role fileRole
}

// maxLinks is as many symbolic links as the walk follows, as the kernel's
// own limit.
const maxLinks = 40

// defaultPath is what a program name is looked up in when PATH is unset, as
// the daemon runs hooks and restic.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// unsafeFile is why a file may not steer the daemon, and what fixes it.
type unsafeFile struct {
	what string // "owned by uid 1000, who could change it"
	fix  string // "chown root: /x"
}

// about makes the problems of the file at path say which file they are about.
func about(path string, problems []unsafeFile) []unsafeFile {
	for i := range problems {
		problems[i].what = path + ": " + problems[i].what
	}
	return problems
}

// strict checks files against the daemon's uid: root and that uid are
// trusted.
type strict struct {
	euid int
}

func newStrict() strict { return strict{euid: os.Geteuid()} }

func (s strict) trusted(uid uint32) bool { return uid == 0 || int64(uid) == int64(s.euid) }

// owner names who a fix hands a file to: root, or the daemon's own uid
// when it does not run as root.
func (s strict) owner() string {
	if s.euid == 0 {
		return "root"
	}
	return fmt.Sprint(s.euid)
}

// readConfig reads the configuration file at path through a descriptor,
// after checking it and every directory above it. A file that others may
// change is refused with an *Errors naming it and the fix.
func readConfig(path string) ([]byte, error) {
	s := newStrict()
	fd, st, problems, err := s.walk(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read configuration file: %w", err)
	}
	if fd < 0 {
		return nil, fmt.Errorf("cannot read configuration file: %w", &fs.PathError{Op: "open", Path: path, Err: unix.ENOENT})
	}
	defer unix.Close(fd)
	problems = append(problems, s.checkFile(path, st, roleConfig)...)
	if len(problems) > 0 {
		// The message starts with the file already: "FILE: owned by ...".
		errs := &Errors{}
		for _, p := range problems {
			errs.List = append(errs.List, &Error{File: path, Msg: p.what + "; expected " + expectedFor(roleConfig) + " (fix: " + p.fix + ")"})
		}
		return nil, errs
	}
	// The descriptor is O_PATH: open the very file it holds for reading.
	f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = &fs.PathError{Op: "open", Path: path, Err: pe.Err}
		}
		return nil, fmt.Errorf("cannot read configuration file: %w", err)
	}
	defer f.Close() //nolint:errcheck // read only
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("cannot read configuration file %s: %w", path, err)
	}
	return data, nil
}

// checkFiles checks every file the configuration names and returns the
// problems as configuration errors (FILE:LINE: KEY: ...), or nil.
func (c *Config) checkFiles() error {
	s := newStrict()
	errs := &Errors{}
	for _, ref := range c.files {
		for _, p := range s.check(ref) {
			e := &Error{File: c.File, Key: ref.key, Msg: p.what + "; expected " + expectedFor(ref.role) + " (fix: " + p.fix + ")"}
			if ref.node != nil {
				e.Line, e.Column = ref.node.Line, ref.node.Column
			}
			errs.List = append(errs.List, e)
		}
	}
	if len(errs.List) == 0 {
		return nil
	}
	errs.sort()
	return errs
}

func expectedFor(role fileRole) string {
	const where = ", in directories only root can change"
	switch role {
	case roleConfig:
		return "a configuration only root can change" + where
	case roleProgram:
		return "a program only root can change" + where
	case roleSecret:
		return "a secret only root can read and change" + where
	case roleDirectory:
		return "a directory only root can write" + where
	case roleMetricsDir:
		return "a directory others may not write, or only with the sticky bit (chmod +t)"
	}
	return "a file only root can change" + where
}

// check walks to one named file and checks it for its role. A file that
// does not exist passes when only root could create it (the daemon or
// restic says it is missing when it is used).
func (s strict) check(ref fileRef) []unsafeFile {
	if ref.role == roleProgram && !strings.Contains(ref.path, "/") {
		return s.checkLookup(ref.path)
	}
	// A hook's relative program runs from the working directory: walk
	// resolves it from there.
	path := ref.path
	fd, st, problems, err := s.walk(path)
	if ref.role == roleMetricsDir {
		return about(path, checkMetricsDir(path, fd, st, err))
	}
	if err != nil {
		problems = append(problems, unsafeFile{what: fmt.Sprintf("cannot be checked: %v", err), fix: "make it reachable by root, or point the key elsewhere"})
		return about(path, problems)
	}
	if fd >= 0 {
		unix.Close(fd)
		problems = append(problems, s.checkFile(path, st, ref.role)...)
	}
	return about(path, problems)
}

// checkLookup checks a program given by name as the daemon finds it: the
// first PATH directory that holds it, and every PATH directory before that
// one (where someone could put a program of that name first).
func (s strict) checkLookup(name string) []unsafeFile {
	search := os.Getenv("PATH")
	if search == "" {
		search = defaultPath
	}
	var problems []unsafeFile
	for _, dir := range filepath.SplitList(search) {
		if !filepath.IsAbs(dir) {
			continue // exec.LookPath never runs a program found through a relative PATH entry
		}
		path := filepath.Join(dir, name)
		fd, st, above, err := s.walk(path)
		problems = append(problems, about(path, above)...)
		if err != nil || fd < 0 {
			continue
		}
		unix.Close(fd)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR || st.Mode&0o111 == 0 {
			continue // not what exec.LookPath takes
		}
		return append(problems, about(path, s.checkFile(path, st, roleProgram))...)
	}
	return problems
}

// checkFile checks the file at path, where a walk ended, for its role.
func (s strict) checkFile(path string, st unix.Stat_t, role fileRole) []unsafeFile {
	q := shell.Quote(path)
	kind := st.Mode & unix.S_IFMT
	switch {
	case role == roleDirectory && kind != unix.S_IFDIR:
		return []unsafeFile{{what: fmt.Sprintf("is %s, not a directory", typeName(kind)), fix: "point the key at a directory"}}
	case role != roleDirectory && kind != unix.S_IFREG:
		return []unsafeFile{{what: fmt.Sprintf("is %s, not a regular file", typeName(kind)), fix: "point the key at a regular file"}}
	}
	var problems []unsafeFile
	if !s.trusted(st.Uid) {
		problems = append(problems, unsafeFile{
			what: fmt.Sprintf("owned by uid %d, who could change it", st.Uid),
			fix:  "chown " + s.owner() + ": " + q,
		})
	}
	mode := st.Mode & 0o7777
	if role == roleSecret && mode&0o077 != 0 {
		who := "its group and others"
		switch {
		case mode&0o070 == 0:
			who = "others"
		case mode&0o007 == 0:
			who = "its group"
		}
		verb := "read"
		if mode&0o022 != 0 {
			verb = "read or written"
		}
		problems = append(problems, unsafeFile{
			what: fmt.Sprintf("may be %s by %s (mode %04o)", verb, who, mode),
			fix:  "chmod 600 " + q,
		})
	} else if mode&0o022 != 0 {
		problems = append(problems, unsafeFile{
			what: fmt.Sprintf("may be written by %s (mode %04o)", writers(mode), mode),
			fix:  "chmod go-w " + q,
		})
	}
	return problems
}

// checkMetricsDir checks the textfile directory where a walk ended: a
// missing one passes (the daemon logs it at each write until it exists),
// anything but a directory does not, and neither does one others may
// write without the sticky bit.
func checkMetricsDir(path string, fd int, st unix.Stat_t, err error) []unsafeFile {
	if err != nil {
		return []unsafeFile{{what: fmt.Sprintf("cannot be checked: %v", err), fix: "make it reachable by root, or point the key elsewhere"}}
	}
	if fd < 0 {
		return nil
	}
	unix.Close(fd)
	if kind := st.Mode & unix.S_IFMT; kind != unix.S_IFDIR {
		return []unsafeFile{{what: fmt.Sprintf("is %s, not a directory", typeName(kind)), fix: "point the key at a directory"}}
	}
	if mode := st.Mode & 0o7777; mode&0o022 != 0 && mode&unix.S_ISVTX == 0 {
		return []unsafeFile{{what: fmt.Sprintf("may be written by %s (mode %04o), who could replace subvault's metrics with their own", writers(mode), mode),
			fix: "chmod go-w " + shell.Quote(path) + " (node_exporter only reads it), or chmod +t " + shell.Quote(path)}}
	}
	return nil
}

// walk opens path from / one component at a time, without following
// links (a link's target is walked in turn), and checks each directory on
// the way. It returns an O_PATH descriptor of the file and its fstat, or
// fd -1 when it does not exist; problems are the directories others could
// change (the walk goes on past them, so that all are reported); err is a
// failure to look.
func (s strict) walk(path string) (fd int, st unix.Stat_t, problems []unsafeFile, err error) {
	if !filepath.IsAbs(path) {
		// Relative to the working directory, whose own parents count too.
		if path, err = filepath.Abs(path); err != nil {
			return -1, st, nil, err
		}
	}
	type dir struct {
		fd     int
		path   string
		sticky bool // others may write it, but the sticky bit keeps root's entries
		mode   uint32
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, st, nil, &fs.PathError{Op: "open", Path: "/", Err: err}
	}
	stack := []dir{{fd: root, path: "/"}}
	defer func() {
		for _, d := range stack {
			unix.Close(d.fd)
		}
	}()
	var rootSt unix.Stat_t
	if err := unix.Fstat(root, &rootSt); err != nil {
		return -1, st, nil, &fs.PathError{Op: "fstat", Path: "/", Err: err}
	}
	problems = append(problems, s.checkDir("/", rootSt)...)
	stack[0].sticky, stack[0].mode = stickyOpen(rootSt.Mode), rootSt.Mode&0o7777

	rest := strings.Split(path, "/")
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		cur := stack[len(stack)-1]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(cur.fd)
				stack = stack[:len(stack)-1]
			}
			continue
		}
		entry := filepath.Join(cur.path, name)
		// What a problem is about: this entry, or the file itself (whose
		// path the message starts with).
		subject := entry + " "
		if entry == path {
			subject = ""
		}
		child, err := unix.Openat(cur.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			if cur.sticky {
				problems = append(problems, unsafeFile{
					what: fmt.Sprintf("%sdoes not exist, and any user may create it in %s (mode %04o)", subject, cur.path, cur.mode),
					fix:  "create " + shell.Quote(entry) + " as root, or use a directory only root can write",
				})
			}
			return -1, st, problems, nil
		}
		if err != nil {
			return -1, st, problems, &fs.PathError{Op: "open", Path: entry, Err: err}
		}
		var cst unix.Stat_t
		if err := unix.Fstat(child, &cst); err != nil {
			unix.Close(child)
			return -1, st, problems, &fs.PathError{Op: "fstat", Path: entry, Err: err}
		}
		isLink := cst.Mode&unix.S_IFMT == unix.S_IFLNK
		// The file itself is checked by checkFile; what leads to it here.
		if cur.sticky && !s.trusted(cst.Uid) && (isLink || hasMore(rest)) {
			problems = append(problems, unsafeFile{
				what: fmt.Sprintf("%sbelongs to uid %d, in %s, which others may write (mode %04o)", subject, cst.Uid, cur.path, cur.mode),
				fix:  "chown " + s.owner() + ": " + shell.Quote(entry) + ", or use a directory only root can write",
			})
		}
		switch cst.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			links++
			target, err := readlink(child)
			unix.Close(child)
			if err != nil {
				return -1, st, problems, &fs.PathError{Op: "readlink", Path: entry, Err: err}
			}
			if links > maxLinks {
				return -1, st, problems, &fs.PathError{Op: "open", Path: path, Err: unix.ELOOP}
			}
			if strings.HasPrefix(target, "/") {
				for len(stack) > 1 {
					unix.Close(stack[len(stack)-1].fd)
					stack = stack[:len(stack)-1]
				}
			}
			rest = append(strings.Split(target, "/"), rest...)
		case unix.S_IFDIR:
			if !hasMore(rest) {
				return child, cst, problems, nil
			}
			problems = append(problems, s.checkDir(entry, cst)...)
			stack = append(stack, dir{fd: child, path: entry, sticky: stickyOpen(cst.Mode), mode: cst.Mode & 0o7777})
		default:
			if hasMore(rest) {
				unix.Close(child)
				return -1, st, problems, &fs.PathError{Op: "open", Path: path, Err: unix.ENOTDIR}
			}
			return child, cst, problems, nil
		}
	}
	// The path ends at a directory already open ("/", or "..").
	top := stack[len(stack)-1]
	dup, err := unix.Dup(top.fd)
	if err != nil {
		return -1, st, problems, err
	}
	if err := unix.Fstat(dup, &st); err != nil {
		unix.Close(dup)
		return -1, st, problems, err
	}
	return dup, st, problems, nil
}

// checkDir checks a directory on the way to a file: root's, and written by
// root alone, or by others only with the sticky bit (its entries are then
// checked one by one).
func (s strict) checkDir(dir string, st unix.Stat_t) []unsafeFile {
	var problems []unsafeFile
	q := shell.Quote(dir)
	if !s.trusted(st.Uid) {
		problems = append(problems, unsafeFile{
			what: fmt.Sprintf("the directory %s is owned by uid %d, who could replace what is in it", dir, st.Uid),
			fix:  "chown " + s.owner() + ": " + q + ", or keep the file in a directory only root can write, such as /etc/subvault",
		})
	}
	mode := st.Mode & 0o7777
	if mode&0o022 != 0 && mode&unix.S_ISVTX == 0 {
		problems = append(problems, unsafeFile{
			what: fmt.Sprintf("the directory %s may be written by %s (mode %04o), who could replace what is in it", dir, writers(mode), mode),
			fix:  "chmod go-w " + q,
		})
	}
	return problems
}

// stickyOpen reports whether others may write a directory of mode, with
// the sticky bit that keeps them from renaming or removing root's entries.
func stickyOpen(mode uint32) bool { return mode&0o022 != 0 && mode&unix.S_ISVTX != 0 }

// hasMore reports whether a walk has components left beyond "" and ".".
func hasMore(rest []string) bool {
	for _, r := range rest {
		if r != "" && r != "." {
			return true
		}
	}
	return false
}

func writers(mode uint32) string {
	switch {
	case mode&0o020 == 0:
		return "others"
	case mode&0o002 == 0:
		return "its group"
	}
	return "its group and others"
}

func typeName(kind uint32) string {
	switch kind {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return "of an unknown type"
}

// readlink reads the link an O_PATH|O_NOFOLLOW descriptor holds.
func readlink(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
