// Package client is the D-Bus client of the subvault daemon: what the
// subvault command line, the status-bar widget and the notifier use. It
// speaks only the published interface (docs/dbus-api.md), like any other
// widget, and never reads the daemon's files.
package client

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api"
)

// Client is a connection to the daemon.
type Client struct {
	conn *dbus.Conn
	mgr  dbus.BusObject
	bus  string

	// Interactive lets polkit ask the user for a password (the call carries
	// the allow-interactive-authorization flag). Set it when a person is at
	// a terminal and a polkit agent can ask them.
	Interactive bool
}

// Dial connects to the bus ("system", "session" or a D-Bus address) and
// checks that the daemon answers (a D-Bus activatable daemon is started by
// this). A daemon that is not there is an *UnreachableError.
func Dial(ctx context.Context, bus string) (*Client, error) {
	conn, err := api.Connect(bus)
	if err != nil {
		return nil, &UnreachableError{Bus: bus, Err: err}
	}
	c := &Client{conn: conn, mgr: conn.Object(api.BusName, api.ManagerPath), bus: bus}
	if err := c.mgr.CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err; err != nil {
		conn.Close() //nolint:errcheck // the ping's error is the one to report
		return nil, &UnreachableError{Bus: bus, Err: err}
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the bus connection (for the notifier, which talks to another
// service too).
func (c *Client) Conn() *dbus.Conn { return c.conn }

// UnreachableError says that the daemon could not be reached, and how to
// start it.
type UnreachableError struct {
	Bus string
	Err error
}

func (e *UnreachableError) Error() string {
	where := "the system bus"
	switch e.Bus {
	case "", "system":
	case "session":
		where = "the session bus"
	default:
		where = "the bus at " + e.Bus
	}
	var derr dbus.Error
	if errors.As(e.Err, &derr) && derr.Name == "org.freedesktop.systemd1.NoSuchUnit" {
		// D-Bus activation asked systemd for the unit's alias, which exists
		// only while the service is enabled.
		return "the subvault daemon is not running, and not enabled (so a call cannot start it); start it with: systemctl enable --now subvault"
	}
	if errors.As(e.Err, &derr) && (derr.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || derr.Name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
		if where == "the system bus" {
			return "the subvault daemon is not running (no one owns " + api.BusName + " on the system bus); start it with: systemctl start subvault"
		}
		return "the subvault daemon is not running on " + where + " (no one owns " + api.BusName + "); start it with: subvault daemon --bus " + e.Bus
	}
	if !errors.As(e.Err, &derr) {
		return fmt.Sprintf("cannot reach the subvault daemon: %v; is the D-Bus daemon running (systemctl status dbus)?", e.Err)
	}
	return fmt.Sprintf("cannot reach the subvault daemon on %s: %v", where, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Daemon is the manager object's properties.
type Daemon struct {
	Version string   `json:"version"`
	State   string   `json:"state"`
	Plans   []string `json:"plans"`
	Running []uint32 `json:"running_jobs"`
	Queued  []uint32 `json:"queued_jobs"`
}

// Plan is a plan object's properties.
type Plan struct {
	Name       string    `json:"name"`
	Subvolumes []string  `json:"subvolumes"`
	Repository string    `json:"repository"`
	Schedule   string    `json:"schedule"`
	NextRun    time.Time `json:"next_run,omitzero"`
	LastBackup time.Time `json:"last_backup,omitzero"`
	LastResult string    `json:"last_result"`
	LastError  string    `json:"last_error"`
	// LastSuccess is when the last backup that ended done finished (zero
	// if none is known, and from a daemon older than the property).
	LastSuccess time.Time `json:"last_success,omitzero"`
}

// Job is a job object's properties. Callers and Triggers are everyone who
// asked for the job (nil from a daemon older than those properties).
type Job struct {
	ID               uint32         `json:"id"`
	Kind             string         `json:"kind"`
	Plan             string         `json:"plan"`
	State            string         `json:"state"`
	Result           string         `json:"result"`
	Trigger          string         `json:"trigger"`
	Callers          []uint32       `json:"callers"`
	Triggers         []string       `json:"triggers"`
	Progress         float64        `json:"progress"`
	BytesDone        uint64         `json:"bytes_done"`
	BytesTotal       uint64         `json:"bytes_total"`
	FilesDone        uint64         `json:"files_done"`
	FilesTotal       uint64         `json:"files_total"`
	SecondsRemaining uint64         `json:"seconds_remaining"`
	CurrentFiles     []string       `json:"current_files"`
	QueuedAt         time.Time      `json:"queued_at,omitzero"`
	StartedAt        time.Time      `json:"started_at,omitzero"`
	FinishedAt       time.Time      `json:"finished_at,omitzero"`
	Error            string         `json:"error"`
	ArchiveID        string         `json:"archive_id"`
	Summary          map[string]any `json:"summary"`
}

// Job states and results, as the contract names them.
const (
	StateQueued   = "queued"
	StateRunning  = "running"
	StateFinished = "finished"

	ResultDone     = "done"
	ResultFailed   = "failed"
	ResultCanceled = "canceled"
)

// Active reports whether the job is queued or running.
func (j Job) Active() bool { return j.State == StateQueued || j.State == StateRunning }

// Snapshot is one local snapshot of a plan.
type Snapshot struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Created time.Time `json:"created"`
	Kept    bool      `json:"kept"`
}

// Archive is one restic snapshot in a plan's repository.
type Archive struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Host  string    `json:"hostname"`
	Paths []string  `json:"paths"`
	Tags  []string  `json:"tags"`
}

func (c *Client) call(ctx context.Context, method string, args ...any) *dbus.Call {
	return <-c.send(ctx, method, make(chan *dbus.Call, 1), args...).Done
}

// send sends a call of the manager's method and returns at once: the
// message, with any descriptor in args, has been written to the bus when
// it returns. godbus's object calls send only the flags NoAutoStart and
// NoReplyExpected, so the call is built here, with
// allow-interactive-authorization when the client is interactive (polkit
// may then ask for a password).
func (c *Client) send(ctx context.Context, method string, done chan *dbus.Call, args ...any) *dbus.Call {
	msg := &dbus.Message{Type: dbus.TypeMethodCall, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldDestination: dbus.MakeVariant(api.BusName),
		dbus.FieldPath:        dbus.MakeVariant(api.ManagerPath),
		dbus.FieldInterface:   dbus.MakeVariant(api.ManagerInterface),
		dbus.FieldMember:      dbus.MakeVariant(method),
	}, Body: args}
	if c.Interactive {
		msg.Flags = dbus.FlagAllowInteractiveAuthorization
	}
	if len(args) > 0 {
		msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
	}
	return c.conn.SendWithContext(ctx, msg, done)
}

// Daemon reads the manager's properties.
func (c *Client) Daemon(ctx context.Context) (Daemon, error) {
	var props map[string]dbus.Variant
	if err := c.mgr.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, api.ManagerInterface).Store(&props); err != nil {
		return Daemon{}, wrap("read the daemon's properties", err)
	}
	d := Daemon{}
	d.Version, _ = props["Version"].Value().(string)
	d.State, _ = props["State"].Value().(string)
	d.Plans, _ = props["Plans"].Value().([]string)
	paths := func(name string) []uint32 {
		var ids []uint32
		ps, _ := props[name].Value().([]dbus.ObjectPath)
		for _, p := range ps {
			if id, ok := JobID(p); ok {
				ids = append(ids, id)
			}
		}
		return ids
	}
	d.Running, d.Queued = paths("RunningJobs"), paths("QueuedJobs")
	return d, nil
}

// Objects reads every plan and job in one call (GetManagedObjects): plans
// sorted by name, jobs as ListJobs orders them.
func (c *Client) Objects(ctx context.Context) ([]Plan, []Job, error) {
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := c.mgr.CallWithContext(ctx, api.ObjectManagerInterface+".GetManagedObjects", 0).Store(&objs); err != nil {
		return nil, nil, wrap("list the daemon's plans and jobs", err)
	}
	var plans []Plan
	var jobs []Job
	for _, ifaces := range objs {
		if p, ok := ifaces[api.PlanInterface]; ok {
			plans = append(plans, planFrom(p))
		}
		if j, ok := ifaces[api.JobInterface]; ok {
			jobs = append(jobs, jobFrom(j))
		}
	}
	sort.Slice(plans, func(i, k int) bool { return plans[i].Name < plans[k].Name })
	SortJobs(jobs)
	return plans, jobs, nil
}

// SortJobs orders jobs as ListJobs does: queued and running first, by id,
// then the history, newest first.
func SortJobs(jobs []Job) {
	sort.Slice(jobs, func(i, k int) bool {
		a, b := jobs[i], jobs[k]
		if a.Active() != b.Active() {
			return a.Active()
		}
		if a.Active() {
			return a.ID < b.ID
		}
		return a.ID > b.ID
	})
}

// Plans reads every plan.
func (c *Client) Plans(ctx context.Context) ([]Plan, error) {
	plans, _, err := c.Objects(ctx)
	return plans, err
}

// Jobs reads every job in the daemon's history.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	_, jobs, err := c.Objects(ctx)
	return jobs, err
}

// Job reads one job.
func (c *Client) Job(ctx context.Context, id uint32) (Job, error) {
	var props map[string]dbus.Variant
	err := c.conn.Object(api.BusName, api.JobPath(id)).CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, api.JobInterface).Store(&props)
	if err != nil {
		var derr dbus.Error
		if errors.As(err, &derr) && (derr.Name == "org.freedesktop.DBus.Error.UnknownObject" ||
			derr.Name == "org.freedesktop.DBus.Error.UnknownMethod" || derr.Name == "org.freedesktop.DBus.Error.UnknownInterface") {
			return Job{}, &Error{Name: api.ErrorNoSuchJob, Message: fmt.Sprintf("no job %d: it never was, or it has left the history (subvault jobs lists those there are)", id)}
		}
		return Job{}, wrap(fmt.Sprintf("read job %d", id), err)
	}
	return jobFrom(props), nil
}

// JobFiles names the files job id works on now (none unless it runs). The
// daemon names files only to a caller with the restore authorization (root,
// or polkit's admin), and a progress display is no reason to ask for a
// password: it never asks, and a refusal is an *Error whose AccessDenied
// is true (show the progress without names then). A job's CurrentFiles
// property is always empty.
func (c *Client) JobFiles(ctx context.Context, id uint32) ([]string, error) {
	var files []string
	if err := c.mgr.CallWithContext(ctx, api.ManagerInterface+".GetJobFiles", 0, id).Store(&files); err != nil {
		return nil, wrap(fmt.Sprintf("name the files of job %d", id), err)
	}
	return files, nil
}

// Snapshots lists the plan's local snapshots, oldest first.
func (c *Client) Snapshots(ctx context.Context, plan string) ([]Snapshot, error) {
	var raw []struct {
		Name, Path string
		Created    uint64
		Kept       bool
	}
	if err := c.call(ctx, "ListSnapshots", plan).Store(&raw); err != nil {
		return nil, wrap("list the snapshots of "+plan, err)
	}
	out := make([]Snapshot, 0, len(raw))
	for _, s := range raw {
		out = append(out, Snapshot{Name: s.Name, Path: s.Path, Created: fromMicros(s.Created), Kept: s.Kept})
	}
	sort.SliceStable(out, func(i, k int) bool { return out[i].Created.Before(out[k].Created) })
	return out, nil
}

// Archives lists the plan's archives in its repository, newest first.
func (c *Client) Archives(ctx context.Context, plan string) ([]Archive, error) {
	var raw []struct {
		ID    string
		Time  uint64
		Host  string
		Paths []string
		Tags  []string
	}
	if err := c.call(ctx, "ListArchives", plan).Store(&raw); err != nil {
		return nil, wrap("list the archives of "+plan, err)
	}
	out := make([]Archive, 0, len(raw))
	for _, a := range raw {
		out = append(out, Archive{ID: a.ID, Time: fromMicros(a.Time), Host: a.Host, Paths: a.Paths, Tags: a.Tags})
	}
	return out, nil
}

func (c *Client) start(ctx context.Context, what, method string, args ...any) (uint32, error) {
	var id uint32
	var path dbus.ObjectPath
	if err := c.call(ctx, method, args...).Store(&id, &path); err != nil {
		return 0, wrap(what, err)
	}
	return id, nil
}

// StartBackup queues a backup of plan (or returns the one already queued or
// running).
func (c *Client) StartBackup(ctx context.Context, plan string) (uint32, error) {
	return c.start(ctx, "start a backup of "+plan, "StartBackup", plan)
}

// StartPrune queues a prune of plan.
func (c *Client) StartPrune(ctx context.Context, plan string) (uint32, error) {
	return c.start(ctx, "start a prune of "+plan, "StartPrune", plan)
}

// StartCheck queues a check of plan's repository.
func (c *Client) StartCheck(ctx context.Context, plan string) (uint32, error) {
	return c.start(ctx, "start a check of "+plan, "StartCheck", plan)
}

// StartRestore queues a restore of archive into target.
func (c *Client) StartRestore(ctx context.Context, plan, archive, target string, include []string) (uint32, error) {
	if include == nil {
		include = []string{}
	}
	return c.start(ctx, "start a restore of "+plan, "StartRestore", plan, archive, target, include)
}

// RestoreOptions are StartRestoreWith's options; the zero value is a plain
// StartRestore.
type RestoreOptions struct {
	InPlace   bool // over the plan's subvolumes (target "/"), root only
	Subvolume bool // into a new btrfs subvolume at target
	Verify    bool // read every restored file back
}

// StartRestoreWith queues a restore with options. Without any it calls
// StartRestore, which daemons older than StartRestoreWith have too.
func (c *Client) StartRestoreWith(ctx context.Context, plan, archive, target string, include []string, opts RestoreOptions) (uint32, error) {
	if opts == (RestoreOptions{}) {
		return c.StartRestore(ctx, plan, archive, target, include)
	}
	if include == nil {
		include = []string{}
	}
	options := map[string]dbus.Variant{}
	for k, v := range map[string]bool{"in_place": opts.InPlace, "subvolume": opts.Subvolume, "verify": opts.Verify} {
		if v {
			options[k] = dbus.MakeVariant(true)
		}
	}
	return c.start(ctx, "start a restore of "+plan, "StartRestoreWith", plan, archive, target, include, options)
}

// Cancel cancels job id.
func (c *Client) Cancel(ctx context.Context, id uint32) error {
	return wrap(fmt.Sprintf("cancel job %d", id), c.call(ctx, "CancelJob", id).Err)
}

// Clone makes a writable snapshot of one of plan's snapshots at target and
// returns its path.
func (c *Client) Clone(ctx context.Context, plan, snapshot, target string) (string, error) {
	var path string
	if err := c.call(ctx, "CloneSnapshot", plan, snapshot, target).Store(&path); err != nil {
		return "", wrap("clone "+snapshot, err)
	}
	return path, nil
}

// DeleteSnapshot deletes one of plan's snapshots.
func (c *Client) DeleteSnapshot(ctx context.Context, plan, snapshot string) error {
	return wrap("delete "+snapshot, c.call(ctx, "DeleteSnapshot", plan, snapshot).Err)
}

// Reload makes the daemon re-read its configuration.
func (c *Client) Reload(ctx context.Context) error {
	return wrap("reload the configuration", c.call(ctx, "Reload").Err)
}

// Error is an error the daemon or the bus answered: its D-Bus name and
// message.
type Error struct {
	Name    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// AccessDenied reports whether the caller was not authorized.
func (e *Error) AccessDenied() bool {
	return e.Name == api.ErrorAccessDenied || e.Name == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
}

// wrap turns a D-Bus error into an *Error whose message says what was being
// done and, for a refusal, what to do about it.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var derr dbus.Error
	if !errors.As(err, &derr) {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("cannot %s: the daemon did not answer in time", what)
		}
		return fmt.Errorf("cannot %s: %w", what, err)
	}
	msg := derr.Error()
	switch derr.Name {
	case api.ErrorAccessDenied:
		msg = "cannot " + what + ": not authorized: " + strings.TrimSuffix(msg, ".") +
			" (run it as root, ask for your user in the plan's allow_users, or let polkit ask: see subvault(1))"
	case "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		msg = "cannot " + what + ": authorization needed, and no password can be asked here: run it from a terminal, or as root"
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected":
		msg = "cannot " + what + ": the daemon went away: " + msg
	default:
		msg = "cannot " + what + ": " + msg
	}
	return &Error{Name: derr.Name, Message: msg}
}

// JobID is the id in a job object's path.
func JobID(p dbus.ObjectPath) (uint32, bool) {
	prefix := string(api.ManagerPath) + "/job/"
	s, ok := strings.CutPrefix(string(p), prefix)
	if !ok {
		return 0, false
	}
	var id uint32
	if _, err := fmt.Sscanf(s, "%d", &id); err != nil || fmt.Sprint(id) != s {
		return 0, false
	}
	return id, true
}

func fromMicros(us uint64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(us))
}

func planFrom(p map[string]dbus.Variant) Plan {
	var out Plan
	applyPlan(&out, p)
	return out
}

func applyPlan(out *Plan, p map[string]dbus.Variant) {
	for k, v := range p {
		switch k {
		case "Name":
			out.Name, _ = v.Value().(string)
		case "Subvolumes":
			out.Subvolumes, _ = v.Value().([]string)
		case "Repository":
			out.Repository, _ = v.Value().(string)
		case "Schedule":
			out.Schedule, _ = v.Value().(string)
		case "NextRun":
			out.NextRun = fromMicros(u64(v))
		case "LastBackup":
			out.LastBackup = fromMicros(u64(v))
		case "LastResult":
			out.LastResult, _ = v.Value().(string)
		case "LastError":
			out.LastError, _ = v.Value().(string)
		case "LastSuccess":
			out.LastSuccess = fromMicros(u64(v))
		}
	}
}

func jobFrom(p map[string]dbus.Variant) Job {
	var out Job
	applyJob(&out, p)
	return out
}

func applyJob(out *Job, p map[string]dbus.Variant) {
	for k, v := range p {
		switch k {
		case "Id":
			out.ID, _ = v.Value().(uint32)
		case "Kind":
			out.Kind, _ = v.Value().(string)
		case "Plan":
			out.Plan, _ = v.Value().(string)
		case "State":
			out.State, _ = v.Value().(string)
		case "Result":
			out.Result, _ = v.Value().(string)
		case "Trigger":
			out.Trigger, _ = v.Value().(string)
		case "Callers":
			out.Callers, _ = v.Value().([]uint32)
		case "Triggers":
			out.Triggers, _ = v.Value().([]string)
		case "Progress":
			out.Progress, _ = v.Value().(float64)
		case "BytesDone":
			out.BytesDone = u64(v)
		case "BytesTotal":
			out.BytesTotal = u64(v)
		case "FilesDone":
			out.FilesDone = u64(v)
		case "FilesTotal":
			out.FilesTotal = u64(v)
		case "SecondsRemaining":
			out.SecondsRemaining = u64(v)
		case "CurrentFiles":
			out.CurrentFiles, _ = v.Value().([]string)
		case "QueuedAt":
			out.QueuedAt = fromMicros(u64(v))
		case "StartedAt":
			out.StartedAt = fromMicros(u64(v))
		case "FinishedAt":
			out.FinishedAt = fromMicros(u64(v))
		case "Error":
			out.Error, _ = v.Value().(string)
		case "ArchiveId":
			out.ArchiveID, _ = v.Value().(string)
		case "Summary":
			m, _ := v.Value().(map[string]dbus.Variant)
			out.Summary = make(map[string]any, len(m))
			for sk, sv := range m {
				out.Summary[sk] = sv.Value()
			}
		}
	}
}

func u64(v dbus.Variant) uint64 {
	n, _ := v.Value().(uint64)
	return n
}
