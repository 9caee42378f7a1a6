// Package shell writes command lines that a person can paste into a POSIX
// shell: the undo and next-boot steps of a rollback, the emergency kit's
// commands, the systemd-nspawn line of a clone.
package shell

import (
	"regexp"
	"strings"
)

var safe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

// Quote quotes s for a POSIX shell. A word that needs no quoting is left as
// it is, so that commands read as a person would type them; anything else
// is put in single quotes, a single quote in it written as '\”.
func Quote(s string) string {
	if safe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join quotes each argument and joins them with spaces.
func Join(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = Quote(a)
	}
	return strings.Join(quoted, " ")
}
