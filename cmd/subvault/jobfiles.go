package main

import (
	"context"
	"errors"
	"time"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

// jobFiles fills in the files a running job works on, for a caller the
// daemon names them to (root, or one polkit lets restore without asking):
// a job's CurrentFiles is empty on the bus. It asks at most once a second
// per job, never for a password, and stops asking after the first refusal:
// the progress is shown without names then.
type jobFiles struct {
	c       *client.Client
	refused bool
	asked   map[uint32]time.Time
	names   map[uint32][]string
}

func newJobFiles(c *client.Client) *jobFiles {
	return &jobFiles{c: c, asked: map[uint32]time.Time{}, names: map[uint32][]string{}}
}

// fill sets j.CurrentFiles when j runs and the daemon names its files.
func (f *jobFiles) fill(ctx context.Context, j *contract.Job) {
	if f == nil || f.refused || j.State != contract.StateRunning {
		return
	}
	if time.Since(f.asked[j.ID]) < time.Second {
		j.CurrentFiles = f.names[j.ID]
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	names, err := f.c.JobFiles(ctx, j.ID)
	f.asked[j.ID] = time.Now()
	var cerr *client.Error
	switch {
	case errors.As(err, &cerr) && (cerr.AccessDenied() || cerr.Name == contract.ErrorUnknownMethod):
		f.refused = true
	case err == nil:
		f.names[j.ID] = names
		j.CurrentFiles = names
	}
}
