package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Node is one entry of an archive, as `restic ls --json` shows it.
//
// Path is restic's JSON string, so each byte of a name that is not UTF-8
// is U+FFFD there (restic's own tree keeps the bytes; its ls --json does
// not). restic 0.14 to 0.18 give no symlink target.
type Node struct {
	Path string
	// Type is restic's: "file", "dir", "symlink", "dev", "chardev",
	// "fifo", "socket".
	Type string
	// Mode is Go's os.FileMode, which restic records (type bits and
	// permissions, setuid, setgid, sticky).
	Mode    os.FileMode
	UID     uint32
	GID     uint32
	Size    uint64
	ModTime time.Time
}

// List runs `restic ls --json ARCHIVE` and returns every node of the
// archive in restic's order (depth first, names sorted), the directories
// above the archive's paths included.
func (r *Runner) List(ctx context.Context, archive string) ([]Node, error) {
	if archive == "" {
		return nil, errors.New("restic ls: an archive is required")
	}
	args := []string{"ls", "--json", "--", archive}
	var nodes []Node
	err := r.retryUnlocked(ctx, func() error {
		nodes = nodes[:0]
		var bad error
		res, err := r.exec(ctx, invocation{op: "ls", args: args, stdout: func(line []byte) {
			n, ok, err := parseNode(line)
			switch {
			case err != nil && bad == nil:
				bad = err
			case ok:
				nodes = append(nodes, n)
			}
		}})
		if err != nil {
			return err
		}
		if err := r.classify("ls", res); err != nil {
			return err
		}
		if bad != nil {
			return fmt.Errorf("restic ls %s on repository %s: %w", archive, r.Repo.Redacted(), bad)
		}
		return nil
	})
	return nodes, err
}

// parseNode reads one line of ls --json: a node (ok), or the archive's
// own line or anything else (not ok). restic 0.14 marks nodes with
// "struct_type":"node"; 0.18 adds "message_type":"node".
func parseNode(line []byte) (Node, bool, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Node{}, false, nil
	}
	var n struct {
		StructType string      `json:"struct_type"`
		Path       string      `json:"path"`
		Type       string      `json:"type"`
		Mode       os.FileMode `json:"mode"`
		UID        uint32      `json:"uid"`
		GID        uint32      `json:"gid"`
		Size       uint64      `json:"size"`
		ModTime    time.Time   `json:"mtime"`
	}
	if err := json.Unmarshal(line, &n); err != nil {
		return Node{}, false, fmt.Errorf("cannot read the line %.200q: %w", line, err)
	}
	if n.StructType != "node" {
		return Node{}, false, nil
	}
	if n.Path == "" || n.Type == "" {
		return Node{}, false, fmt.Errorf("a node without a path or type: %.200q", line)
	}
	return Node{Path: n.Path, Type: n.Type, Mode: n.Mode, UID: n.UID, GID: n.GID, Size: n.Size, ModTime: n.ModTime}, true, nil
}

// JSONPath is path p as restic's JSON shows it: each byte that is not part
// of valid UTF-8 becomes U+FFFD (Go's encoding/json does that). A path on
// disk is looked up among Nodes through it.
func JSONPath(p string) string {
	if utf8.ValidString(p) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); {
		r, size := utf8.DecodeRuneInString(p[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(p[i : i+size])
		}
		i += size
	}
	return b.String()
}
