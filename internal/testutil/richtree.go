package testutil

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// POSIX ACL entry tags, as the kernel's system.posix_acl_* attributes hold
// them (<linux/posix_acl_xattr.h>).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

// ACLEntry is one entry of a POSIX ACL: a tag (user, group...), the
// permissions (rwx as 4, 2, 1) and, for named users and groups, the id.
type ACLEntry struct {
	Tag  uint16
	Perm uint16
	ID   uint32
}

// PosixACL encodes entries as the value of system.posix_acl_access or
// system.posix_acl_default (version 2), what setfacl writes. Entries must
// come in the kernel's order: by tag, then id.
func PosixACL(entries ...ACLEntry) []byte {
	out := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		out = binary.LittleEndian.AppendUint16(out, e.Tag)
		out = binary.LittleEndian.AppendUint16(out, e.Perm)
		out = binary.LittleEndian.AppendUint32(out, e.ID)
	}
	return out
}

// aclUserRWX is "user::rw-, user:1234:rwx, group::r--, mask::rwx,
// other::r--" (setfacl -m u:1234:rwx on a 0644 file).
func aclUserRWX() []byte {
	return PosixACL(ACLEntry{aclUserObj, 6, aclNoID}, ACLEntry{aclUser, 7, 1234}, ACLEntry{aclGroupObj, 4, aclNoID},
		ACLEntry{aclGroup, 5, 5678}, ACLEntry{aclMask, 7, aclNoID}, ACLEntry{aclOther, 4, aclNoID})
}

// MakeRichTree fills the existing directory root with what a restore must
// keep, and returns the relative paths of the notable entries:
//
//   - owners: owned/ and owned/file belong to 1234:5678;
//   - modes: bin/setuid 4755, bin/setgid 2755, shared/ 1777 (sticky),
//     owned/file 0640, private/ 0700;
//   - extended attributes: attrs/file (user.note, and user.binary with NUL
//     and 0xff bytes), attrs/ itself;
//   - POSIX ACLs: acl/file (access ACL for user 1234 and group 5678),
//     acl/ (a default ACL);
//   - hard links: links/a, links/b and links/sub/c, one inode;
//   - symbolic links: links/rel (relative), links/abs (absolute, /etc/hostname),
//     links/dangling, links/dirlink (to a directory);
//   - a sparse file: sparse/file, 64 MiB with one 4 KiB block written at
//     32 MiB;
//   - names that are not UTF-8: names/bad-\xff\xfe-name,
//     names/dir-\xc3\x28/inner;
//   - an empty file and an empty directory;
//   - with bigBytes > 0, big/file: bigBytes of pseudo-random content (a
//     fast generator, not crypto/rand);
//   - every modification time set to the nanosecond, directories' last.
//
// It needs root (chown, setuid bits).
func MakeRichTree(t testing.TB, root string, bigBytes int64) map[string]string {
	t.Helper()
	RequireRoot(t)
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("MakeRichTree: %s: %v", what, err)
		}
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	mkdir := func(rel string, mode os.FileMode) {
		check("mkdir "+rel, os.MkdirAll(p(rel), 0o755))
		check("chmod "+rel, os.Chmod(p(rel), mode))
	}
	write := func(rel, content string, mode os.FileMode) {
		check("write "+rel, os.WriteFile(p(rel), []byte(content), 0o600))
		check("chmod "+rel, os.Chmod(p(rel), mode))
	}
	notable := map[string]string{}

	mkdir("owned", 0o750)
	write("owned/file", "belongs to 1234\n", 0o640)
	check("chown", os.Lchown(p("owned/file"), 1234, 5678))
	check("chown", os.Lchown(p("owned"), 1234, 5678))
	notable["owner"] = "owned/file"

	mkdir("bin", 0o755)
	write("bin/setuid", "#!/bin/sh\n", 0o755)
	check("chmod setuid", os.Chmod(p("bin/setuid"), 0o755|os.ModeSetuid))
	write("bin/setgid", "#!/bin/sh\n", 0o755)
	check("chmod setgid", os.Chmod(p("bin/setgid"), 0o755|os.ModeSetgid))
	mkdir("shared", 0o777|os.ModeSticky)
	check("chmod sticky", os.Chmod(p("shared"), 0o777|os.ModeSticky))
	mkdir("private", 0o700)
	write("private/key", "secret\n", 0o600)
	notable["setuid"], notable["sticky"] = "bin/setuid", "shared"

	mkdir("attrs", 0o755)
	write("attrs/file", "with attributes\n", 0o644)
	check("setxattr", unix.Lsetxattr(p("attrs/file"), "user.note", []byte("hello"), 0))
	check("setxattr", unix.Lsetxattr(p("attrs/file"), "user.binary", []byte{0, 1, 0xff, 'x'}, 0))
	check("setxattr", unix.Lsetxattr(p("attrs"), "user.dir", []byte("on a directory"), 0))
	notable["xattr"] = "attrs/file"

	mkdir("acl", 0o755)
	write("acl/file", "with an ACL\n", 0o644)
	check("ACL", unix.Lsetxattr(p("acl/file"), "system.posix_acl_access", aclUserRWX(), 0))
	check("default ACL", unix.Lsetxattr(p("acl"), "system.posix_acl_default",
		PosixACL(ACLEntry{aclUserObj, 7, aclNoID}, ACLEntry{aclUser, 5, 1234}, ACLEntry{aclGroupObj, 5, aclNoID},
			ACLEntry{aclMask, 5, aclNoID}, ACLEntry{aclOther, 5, aclNoID}), 0))
	notable["acl"] = "acl/file"

	mkdir("links/sub", 0o755)
	write("links/a", "one inode, three names\n", 0o644)
	check("link", os.Link(p("links/a"), p("links/b")))
	check("link", os.Link(p("links/a"), p("links/sub/c")))
	check("symlink", os.Symlink("../attrs/file", p("links/rel")))
	check("symlink", os.Symlink("/etc/hostname", p("links/abs")))
	check("symlink", os.Symlink("nowhere/x", p("links/dangling")))
	check("symlink", os.Symlink("../acl", p("links/dirlink")))
	notable["hardlink"], notable["symlink"] = "links/a", "links/abs"

	mkdir("sparse", 0o755)
	f, err := os.Create(p("sparse/file"))
	check("sparse", err)
	check("sparse", f.Truncate(64<<20))
	block := make([]byte, 4096)
	for i := range block {
		block[i] = byte(i%251) + 1
	}
	_, err = f.WriteAt(block, 32<<20)
	check("sparse", err)
	check("sparse", f.Close())
	notable["sparse"] = "sparse/file"

	mkdir("names/dir-\xc3\x28", 0o755)
	write("names/bad-\xff\xfe-name", "a name that is not UTF-8\n", 0o644)
	write("names/dir-\xc3\x28/inner", "inside a directory whose name is not UTF-8\n", 0o644)
	write("empty-file", "", 0o644)
	mkdir("empty-dir", 0o755)
	notable["not-utf8"] = "names/bad-\xff\xfe-name"

	if bigBytes > 0 {
		mkdir("big", 0o755)
		f, err := os.Create(p("big/file"))
		check("big", err)
		src := rand.NewChaCha8([32]byte{'s', 'u', 'b', 'v', 'a', 'u', 'l', 't'})
		_, err = io.CopyN(f, src, bigBytes)
		check("big", err)
		check("big", f.Close())
		notable["big"] = "big/file"
	}

	// Times to the nanosecond, children before their directories (a
	// directory's time moves when an entry is added).
	base := time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)
	var all []string
	check("walk", filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		all = append(all, path)
		return err
	}))
	for i := len(all) - 1; i >= 0; i-- {
		ts := unix.NsecToTimespec(base.Add(time.Duration(i)*time.Hour + time.Duration(i)).UnixNano())
		check("times "+all[i], unix.UtimesNanoAt(unix.AT_FDCWD, all[i], []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
	return notable
}
