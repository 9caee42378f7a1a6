package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Archive is a restic snapshot.
type Archive struct {
	ID       string    `json:"id"`
	ShortID  string    `json:"short_id"`
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname"`
	Username string    `json:"username"`
	Paths    []string  `json:"paths"`
	Tags     []string  `json:"tags"`
	// Parent is the archive this one was made against, "" for none.
	Parent string `json:"parent"`
	Tree   string `json:"tree"`
}

// SnapshotFilter selects archives; empty fields select all. Several values
// of a field are alternatives (host a OR host b); restic's tag syntax
// "a,b" (both tags) works within one Tags entry.
type SnapshotFilter struct {
	Hosts []string
	Paths []string
	Tags  []string
}

func (f SnapshotFilter) args() []string {
	var args []string
	for _, h := range f.Hosts {
		args = append(args, "--host", h)
	}
	for _, p := range f.Paths {
		args = append(args, "--path", p)
	}
	for _, t := range f.Tags {
		args = append(args, "--tag", t)
	}
	return args
}

// Snapshots lists the archives that match filter, oldest first (restic's
// order).
func (r *Runner) Snapshots(ctx context.Context, filter SnapshotFilter) ([]Archive, error) {
	args := append([]string{"snapshots", "--json"}, filter.args()...)
	var out bytes.Buffer
	res, err := r.exec(ctx, invocation{op: "snapshots", args: args, stdout: func(line []byte) {
		out.Write(line)
		out.WriteByte('\n')
	}})
	if err != nil {
		return nil, err
	}
	if err := r.classify("snapshots", res); err != nil {
		return nil, err
	}
	js := firstJSON(out.Bytes(), '[')
	if js == nil {
		return nil, fmt.Errorf("restic snapshots on repository %s printed no JSON list", r.Repo.Redacted())
	}
	var archives []Archive
	if err := json.Unmarshal(js, &archives); err != nil {
		return nil, fmt.Errorf("restic snapshots on repository %s: cannot read its JSON: %w", r.Repo.Redacted(), err)
	}
	return archives, nil
}

// firstJSON is the first line of out that starts with open ('[' or '{'):
// restic may print other text around its JSON (forget --prune prints the
// prune report after it).
func firstJSON(out []byte, open byte) []byte {
	for _, line := range bytes.Split(out, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] == open {
			return line
		}
	}
	return nil
}

// ForgetOptions is one `restic forget`. Counts of zero are not passed.
type ForgetOptions struct {
	KeepLast, KeepHourly, KeepDaily, KeepWeekly, KeepMonthly, KeepYearly int
	// KeepWithin is restic's duration ("7d", "1y2m"): keep every archive
	// that recent.
	KeepWithin string
	KeepTags   []string
	// Filter limits which archives are considered.
	Filter SnapshotFilter
	// GroupBy defaults to "host,paths", passed explicitly so it does not
	// depend on the restic version's default.
	GroupBy string
	Prune   bool
	DryRun  bool
}

// ForgetGroup is one group of archives restic judged together.
type ForgetGroup struct {
	Host   string
	Paths  []string
	Tags   []string
	Keep   []Archive
	Remove []Archive
}

// ForgetResult says which archives were kept and removed, per group.
type ForgetResult struct {
	Groups []ForgetGroup
	// PruneOutput is restic's prune report (text), when Prune was set.
	PruneOutput string
}

// Removed is the IDs of every removed archive.
func (f ForgetResult) Removed() []string {
	var ids []string
	for _, g := range f.Groups {
		for _, a := range g.Remove {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

// Kept is the IDs of every kept archive.
func (f ForgetResult) Kept() []string {
	var ids []string
	for _, g := range f.Groups {
		for _, a := range g.Keep {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

func (o ForgetOptions) args() ([]string, error) {
	args := []string{"forget", "--json"}
	policy := false
	for _, k := range []struct {
		flag string
		n    int
	}{{"--keep-last", o.KeepLast}, {"--keep-hourly", o.KeepHourly}, {"--keep-daily", o.KeepDaily},
		{"--keep-weekly", o.KeepWeekly}, {"--keep-monthly", o.KeepMonthly}, {"--keep-yearly", o.KeepYearly}} {
		if k.n < 0 {
			return nil, fmt.Errorf("restic forget: %s %d: must not be negative", k.flag, k.n)
		}
		if k.n > 0 {
			args = append(args, k.flag, strconv.Itoa(k.n))
			policy = true
		}
	}
	if o.KeepWithin != "" {
		args = append(args, "--keep-within", o.KeepWithin)
		policy = true
	}
	for _, t := range o.KeepTags {
		args = append(args, "--keep-tag", t)
		policy = true
	}
	if !policy {
		// restic 0.14 keeps everything then; later versions refuse. Either
		// way it is a configuration mistake.
		return nil, fmt.Errorf("restic forget: no keep rule given (keep_last, keep_daily, ... or keep_within): nothing would be decided")
	}
	groupBy := o.GroupBy
	if groupBy == "" {
		groupBy = "host,paths"
	}
	args = append(args, "--group-by", groupBy)
	args = append(args, o.Filter.args()...)
	if o.Prune {
		args = append(args, "--prune")
	}
	if o.DryRun {
		args = append(args, "--dry-run")
	}
	return args, nil
}

// Forget runs `restic forget --json` with the options' keep rules, and
// --prune when asked. A locked repository is handled as in Backup.
func (r *Runner) Forget(ctx context.Context, opts ForgetOptions) (ForgetResult, error) {
	args, err := opts.args()
	if err != nil {
		return ForgetResult{}, err
	}
	var result ForgetResult
	err = r.retryUnlocked(ctx, func() error {
		var out bytes.Buffer
		res, err := r.exec(ctx, invocation{op: "forget", args: args, giveUp: deleteRefusedRE, stdout: func(line []byte) {
			out.Write(cleanTerminal(line))
			out.WriteByte('\n')
		}})
		if err != nil {
			return err
		}
		if err := r.classify("forget", res); err != nil {
			return err
		}
		result, err = parseForget(out.Bytes())
		if err != nil {
			return fmt.Errorf("restic forget on repository %s: %w", r.Repo.Redacted(), err)
		}
		return nil
	})
	if err != nil || opts.DryRun || len(result.Removed()) == 0 {
		return result, err
	}
	return result, r.checkForgotten(ctx, opts.Filter, result.Removed())
}

// checkForgotten lists the archives again and fails when any of removed is
// still there: a server that refuses deletes (append-only) lets restic
// 0.18 exit 0 and report them removed.
func (r *Runner) checkForgotten(ctx context.Context, filter SnapshotFilter, removed []string) error {
	left, err := r.Snapshots(ctx, filter)
	if err != nil {
		return fmt.Errorf("restic forget on repository %s said it removed %d archive(s), but they could not be listed again to check: %w",
			r.Repo.Redacted(), len(removed), err)
	}
	gone := make(map[string]bool, len(removed))
	for _, id := range removed {
		gone[id] = true
	}
	var still []string
	for _, a := range left {
		if gone[a.ID] {
			still = append(still, a.ID[:min(8, len(a.ID))])
		}
	}
	if len(still) == 0 {
		return nil
	}
	return &Error{Kind: ErrDeleteRefused, Op: "forget", Repository: r.Repo.Redacted(),
		Message: fmt.Sprintf("restic forget on repository %s reported %d archive(s) removed, but %d are still there (%s): the server refused to delete archives: %s",
			r.Repo.Redacted(), len(removed), len(still), strings.Join(still, ", "), AppendOnlyAdvice)}
}

// parseForget reads forget --json: one line with a list of groups (restic
// prints "null" or nothing when there are no archives), then, with --prune,
// the prune report as text.
func parseForget(out []byte) (ForgetResult, error) {
	var result ForgetResult
	js := firstJSON(out, '[')
	if js == nil {
		result.PruneOutput = strings.TrimSpace(string(out))
		return result, nil
	}
	var groups []struct {
		Host   string    `json:"host"`
		Paths  []string  `json:"paths"`
		Tags   []string  `json:"tags"`
		Keep   []Archive `json:"keep"`
		Remove []Archive `json:"remove"`
	}
	if err := json.Unmarshal(js, &groups); err != nil {
		return result, fmt.Errorf("cannot read its JSON: %w", err)
	}
	for _, g := range groups {
		result.Groups = append(result.Groups, ForgetGroup(g))
	}
	if i := bytes.Index(out, js); i >= 0 {
		result.PruneOutput = strings.TrimSpace(string(out[i+len(js):]))
	}
	return result, nil
}
