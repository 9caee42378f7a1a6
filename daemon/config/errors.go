package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a configuration file.
//
// Its text is "FILE:LINE: KEY: what is wrong; expected WHAT", for example
//
//	/etc/subvault/config.yaml:14: plans.home.schedule: "0 3 * *" is not a cron spec (expected exactly 5 fields, found 4); expected 5 fields "minute hour day-of-month month day-of-week" or @hourly/@daily/@weekly/@monthly/@yearly/@every DURATION
//
// Key is the full dotted key path with list indexes ("plans.home.subvolumes[0]");
// it is empty for problems with the file as a whole (syntax errors, an empty file),
// and then the text is "FILE:LINE: what is wrong; expected WHAT". Line is 0
// for what is on no line: a default value ("FILE: KEY: ..."), or the file's
// own owner and mode ("FILE: ...").
type Error struct {
	File   string
	Line   int // 1-based
	Column int // 1-based; 0 when unknown
	Key    string
	Msg    string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		if e.Key == "" {
			return fmt.Sprintf("%s: %s", e.File, e.Msg)
		}
		return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
}

// Errors is every problem found in one configuration file, sorted by
// position. Parse and Load return a *Errors whenever the file is refused.
type Errors struct {
	List []*Error
}

// Error joins the problems, one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, err := range e.List {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual *Error values.
func (e *Errors) Unwrap() []error {
	errs := make([]error, len(e.List))
	for i, err := range e.List {
		errs[i] = err
	}
	return errs
}

func (e *Errors) sort() {
	slices.SortStableFunc(e.List, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}
