package metrics

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/daemon/safefs"
)

// TextfileName is the file the daemon writes in the textfile directory.
const TextfileName = "subvault.prom"

// tempPrefix starts the name of the file a write makes before it is
// renamed into place: a dot file without the .prom suffix, which
// node_exporter's textfile collector does not read.
const tempPrefix = ".subvault.prom.tmp-"

// tempName is a new temporary file's name (a variable for tests, which
// plant a link where it will be made).
var tempName = func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return tempPrefix + hex.EncodeToString(b[:])
}

// WriteTextfile writes what g gathers to dir/subvault.prom, in Prometheus'
// text format, atomically: a reader sees the whole old file or the whole
// new one. The directory is opened once (a symbolic link on the way is
// followed only where only root could have made it, safefs.OpenTrustedDir)
// and everything after is relative to its descriptor: the new file is
// made there with O_EXCL|O_NOFOLLOW (a link planted at its name is never
// followed, and a name taken is skipped), written, fsynced and renamed
// over subvault.prom (a link there is replaced, never followed). A
// directory others may write without the sticky bit is refused: they
// could replace the metrics with their own.
func WriteTextfile(dir string, g prometheus.Gatherer) error {
	families, err := g.Gather()
	if err != nil {
		return fmt.Errorf("cannot gather the metrics: %w", err)
	}
	var buf bytes.Buffer
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			return fmt.Errorf("cannot format the metrics: %w", err)
		}
	}
	d, err := openTextfileDir(dir)
	if err != nil {
		return err
	}
	defer d.Close() //nolint:errcheck // a directory
	dfd := int(d.Fd())
	var fd int
	var name string
	for range 10 {
		name = tempName()
		fd, err = unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("cannot make a file in the textfile directory %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir+"/"+name)
	fail := func(err error) error {
		f.Close()                       //nolint:errcheck,gosec // failed already
		_ = unix.Unlinkat(dfd, name, 0) // ours: made with O_EXCL, in a directory nobody else may rename in
		return fmt.Errorf("cannot write %s/%s: %w", dir, TextfileName, err)
	}
	// The mode whatever the umask: node_exporter runs as its own user.
	if err := unix.Fchmod(fd, 0o644); err != nil {
		return fail(err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = unix.Unlinkat(dfd, name, 0)
		return fmt.Errorf("cannot write %s/%s: %w", dir, TextfileName, err)
	}
	if err := unix.Renameat(dfd, name, dfd, TextfileName); err != nil {
		_ = unix.Unlinkat(dfd, name, 0)
		return fmt.Errorf("cannot write %s/%s: %w", dir, TextfileName, err)
	}
	_ = unix.Fsync(dfd) // the rename on disk; the file is whole either way
	return nil
}

// openTextfileDir opens the textfile directory and checks it: a
// directory that others may write only with the sticky bit.
func openTextfileDir(dir string) (*os.File, error) {
	d, err := safefs.OpenTrustedDir(dir)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("the textfile directory %s does not exist: create it (it is node_exporter's --collector.textfile.directory; Debian's prometheus-node-exporter makes /var/lib/prometheus/node-exporter), or change settings.metrics.textfile", dir)
		}
		return nil, fmt.Errorf("cannot open the textfile directory: %w", err)
	}
	st, err := safefs.Stat(d)
	if err != nil {
		d.Close() //nolint:errcheck,gosec // refused
		return nil, fmt.Errorf("cannot check the textfile directory %s: %w", dir, err)
	}
	if mode := st.Mode & 0o7777; mode&0o022 != 0 && mode&unix.S_ISVTX == 0 {
		d.Close() //nolint:errcheck,gosec // refused
		return nil, fmt.Errorf("the textfile directory %s may be written by other users (mode %04o), who could replace subvault's metrics with their own: chmod go-w %s (node_exporter only reads it), or chmod +t %s",
			dir, mode, dir, dir)
	}
	return d, nil
}

// RemoveTemporary removes what writes to dir left when the daemon died
// between making a temporary file and renaming it: regular files of the
// daemon's own user whose names start with the temporary prefix.
func RemoveTemporary(dir string) error {
	d, err := openTextfileDir(dir)
	if err != nil {
		return err
	}
	defer d.Close() //nolint:errcheck // a directory
	dfd := int(d.Fd())
	var errs []error
	for {
		names, err := d.Readdirnames(256)
		for _, name := range names {
			if !strings.HasPrefix(name, tempPrefix) {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue
			}
			if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != uint32(os.Geteuid()) {
				continue // not one of ours
			}
			if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("cannot remove %s/%s: %w", dir, name, err))
			}
		}
		if errors.Is(err, io.EOF) || len(names) == 0 {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot list the textfile directory %s: %w", dir, err))
			break
		}
	}
	return errors.Join(errs...)
}
