package contract

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DiffTo's records, on the descriptor the caller passed: for each change
// the kind, a tab, the path's bytes as they are, and a NUL byte. A path is
// never escaped (a name that is not UTF-8 keeps its bytes; a tab or a
// newline in a name is part of the path) and holds no NUL, so the first
// tab ends the kind and the NUL ends the record, as find -print0 ends a
// name.

// AppendDiffRecord appends c's record to buf.
func AppendDiffRecord(buf []byte, c Change) []byte {
	buf = append(buf, c.Kind...)
	buf = append(buf, '\t')
	buf = append(buf, c.Path...)
	return append(buf, 0)
}

// ReadDiffRecords reads DiffTo's records from r until it ends, calling
// each with every change (its path's bytes as they are), and returns how
// many there were. An error of each stops the reading.
func ReadDiffRecords(r io.Reader, each func(Change) error) (int, error) {
	sc := bufio.NewScanner(r)
	// A path is at most PATH_MAX (4096) bytes; leave room all the same.
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexByte(data, 0); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return 0, nil, errors.New("the last record has no NUL at its end (cut short)")
		}
		return 0, nil, nil
	})
	n := 0
	for sc.Scan() {
		kind, path, ok := bytes.Cut(sc.Bytes(), []byte{'\t'})
		if !ok {
			return n, fmt.Errorf("record %d has no tab after its kind", n+1)
		}
		if err := each(Change{Kind: ChangeKind(kind), Path: string(path)}); err != nil {
			return n, err
		}
		n++
	}
	return n, sc.Err()
}
