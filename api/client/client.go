// Package client is the D-Bus client of the subvault daemon: what the
// subvault command line, the status-bar widget and the notifier use. It
// speaks only the published interface (docs/dbus-api.md), like any other
// widget, and never reads the daemon's files. It stands on the wire
// contract (api/contract, whose types its methods return) and nothing else
// of subvault, so linking it links no daemon code.
package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
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
	return dial(ctx, bus, 0)
}

// DialRunning is Dial that never starts the daemon: one that is not
// running is an *UnreachableError at once, as D-Bus activation is not
// asked for. For shell completion, which a key press runs.
func DialRunning(ctx context.Context, bus string) (*Client, error) {
	return dial(ctx, bus, dbus.FlagNoAutoStart)
}

func dial(ctx context.Context, bus string, flags dbus.Flags) (*Client, error) {
	conn, err := connect(bus)
	if err != nil {
		return nil, &UnreachableError{Bus: bus, Err: err}
	}
	c := &Client{conn: conn, mgr: conn.Object(contract.BusName, contract.ManagerPath), bus: bus}
	if err := c.mgr.CallWithContext(ctx, contract.PeerInterface+".Ping", flags).Err; err != nil {
		conn.Close() //nolint:errcheck // the ping's error is the one to report
		return nil, &UnreachableError{Bus: bus, Err: err}
	}
	return c, nil
}

// connect opens the bus the daemon serves on: "system", "session", or a
// D-Bus address such as unix:path=/run/test/bus.
func connect(bus string) (*dbus.Conn, error) {
	var conn *dbus.Conn
	var err error
	switch bus {
	case "", "system":
		bus = "system"
		conn, err = dbus.ConnectSystemBus()
	case "session":
		conn, err = dbus.ConnectSessionBus()
	default:
		conn, err = dbus.Connect(bus)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the %s bus: %w", bus, err)
	}
	return conn, nil
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
			return "the subvault daemon is not running (no one owns " + contract.BusName + " on the system bus); start it with: systemctl start subvault"
		}
		return "the subvault daemon is not running on " + where + " (no one owns " + contract.BusName + "); start it with: subvault daemon --bus " + e.Bus
	}
	if !errors.As(e.Err, &derr) {
		return fmt.Sprintf("cannot reach the subvault daemon: %v; is the D-Bus daemon running (systemctl status dbus)?", e.Err)
	}
	return fmt.Sprintf("cannot reach the subvault daemon on %s: %v", where, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

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
		dbus.FieldDestination: dbus.MakeVariant(contract.BusName),
		dbus.FieldPath:        dbus.MakeVariant(contract.ManagerPath),
		dbus.FieldInterface:   dbus.MakeVariant(contract.ManagerInterface),
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
func (c *Client) Daemon(ctx context.Context) (contract.Manager, error) {
	var props map[string]dbus.Variant
	if err := c.mgr.CallWithContext(ctx, contract.PropertiesInterface+".GetAll", 0, contract.ManagerInterface).Store(&props); err != nil {
		return contract.Manager{}, wrap("read the daemon's properties", err)
	}
	var m contract.Manager
	m.Apply(props)
	return m, nil
}

// Objects reads every plan and job in one call (GetManagedObjects): plans
// sorted by name, jobs as ListJobs orders them.
func (c *Client) Objects(ctx context.Context) ([]contract.Plan, []contract.Job, error) {
	objs, err := c.managedObjects(ctx)
	if err != nil {
		return nil, nil, err
	}
	var plans []contract.Plan
	var jobs []contract.Job
	for _, ifaces := range objs {
		if p, ok := ifaces[contract.PlanInterface]; ok {
			plans = append(plans, contract.PlanOf(p))
		}
		if j, ok := ifaces[contract.JobInterface]; ok {
			jobs = append(jobs, contract.JobOf(j))
		}
	}
	slices.SortFunc(plans, func(a, b contract.Plan) int { return strings.Compare(a.Name, b.Name) })
	SortJobs(jobs)
	return plans, jobs, nil
}

// managedObjects calls GetManagedObjects. The reply is taken as godbus
// decoded it (the maps its signature makes) rather than stored into a map
// of its own: that copy took a fifth of the call's time with 200 jobs.
func (c *Client) managedObjects(ctx context.Context) (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, error) {
	call := c.mgr.CallWithContext(ctx, contract.ObjectManagerInterface+".GetManagedObjects", 0)
	if call.Err != nil {
		return nil, wrap("list the daemon's plans and jobs", call.Err)
	}
	if len(call.Body) == 1 {
		if objs, ok := call.Body[0].(map[dbus.ObjectPath]map[string]map[string]dbus.Variant); ok {
			return objs, nil
		}
	}
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := call.Store(&objs); err != nil {
		return nil, wrap("list the daemon's plans and jobs", err)
	}
	return objs, nil
}

// SortJobs orders jobs as ListJobs does: queued and running first, by id,
// then the history, newest first.
func SortJobs(jobs []contract.Job) {
	slices.SortFunc(jobs, func(a, b contract.Job) int {
		switch {
		case a.Active() != b.Active():
			if a.Active() {
				return -1
			}
			return 1
		case a.Active():
			return cmp.Compare(a.ID, b.ID)
		}
		return cmp.Compare(b.ID, a.ID)
	})
}

// Plans reads every plan.
func (c *Client) Plans(ctx context.Context) ([]contract.Plan, error) {
	plans, _, err := c.Objects(ctx)
	return plans, err
}

// Jobs reads every job in the daemon's history.
func (c *Client) Jobs(ctx context.Context) ([]contract.Job, error) {
	_, jobs, err := c.Objects(ctx)
	return jobs, err
}

// Job reads one job.
func (c *Client) Job(ctx context.Context, id uint32) (contract.Job, error) {
	var props map[string]dbus.Variant
	err := c.conn.Object(contract.BusName, contract.JobPath(id)).CallWithContext(ctx, contract.PropertiesInterface+".GetAll", 0, contract.JobInterface).Store(&props)
	if err != nil {
		var derr dbus.Error
		if errors.As(err, &derr) && (derr.Name == contract.ErrorUnknownObject ||
			derr.Name == contract.ErrorUnknownMethod || derr.Name == contract.ErrorUnknownInterface) {
			return contract.Job{}, &Error{Name: contract.ErrorNoSuchJob, Message: fmt.Sprintf("no job %d: it never was, or it has left the history (subvault jobs lists those there are)", id)}
		}
		return contract.Job{}, wrap(fmt.Sprintf("read job %d", id), err)
	}
	return contract.JobOf(props), nil
}

// JobFiles names the files job id works on now (none unless it runs). The
// daemon names files only to a caller with the restore authorization (root,
// or polkit's admin), and a progress display is no reason to ask for a
// password: it never asks, and a refusal is an *Error whose AccessDenied
// is true (show the progress without names then). A job's CurrentFiles
// property is always empty.
func (c *Client) JobFiles(ctx context.Context, id uint32) ([]string, error) {
	var files []string
	if err := c.mgr.CallWithContext(ctx, contract.ManagerInterface+".GetJobFiles", 0, id).Store(&files); err != nil {
		return nil, wrap(fmt.Sprintf("name the files of job %d", id), err)
	}
	return files, nil
}

// Snapshots lists the plan's local snapshots, oldest first.
func (c *Client) Snapshots(ctx context.Context, plan string) ([]Snapshot, error) {
	var raw []contract.SnapshotEntry
	if err := c.call(ctx, "ListSnapshots", plan).Store(&raw); err != nil {
		return nil, wrap("list the snapshots of "+plan, err)
	}
	out := make([]Snapshot, 0, len(raw))
	for _, s := range raw {
		out = append(out, Snapshot{Name: s.Name, Path: s.Path, Created: contract.FromMicros(s.Time), Kept: s.Kept})
	}
	slices.SortStableFunc(out, func(a, b Snapshot) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// Archives lists the plan's archives in its repository, newest first.
func (c *Client) Archives(ctx context.Context, plan string) ([]Archive, error) {
	var raw []contract.ArchiveEntry
	if err := c.call(ctx, "ListArchives", plan).Store(&raw); err != nil {
		return nil, wrap("list the archives of "+plan, err)
	}
	out := make([]Archive, 0, len(raw))
	for _, a := range raw {
		out = append(out, Archive{ID: a.ShortID, Time: contract.FromMicros(a.Time), Host: a.Hostname, Paths: a.Paths, Tags: a.Tags})
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

// StartCopy queues a copy of plan's latest archive to the repositories its
// copy_to names.
func (c *Client) StartCopy(ctx context.Context, plan string) (uint32, error) {
	return c.start(ctx, "start a copy of "+plan, "StartCopy", plan)
}

// StartSend queues a send of plan's newest snapshots to target, one of
// its send_to ("" when it has only one), or returns the one already queued.
func (c *Client) StartSend(ctx context.Context, plan, target string) (uint32, error) {
	what := "start a send of " + plan
	if target != "" {
		what += " to " + target
	}
	return c.start(ctx, what, "StartSend", plan, target)
}

// Targets lists the configured targets, sorted by name, with whether each
// is present and each plan's newest copy there.
func (c *Client) Targets(ctx context.Context) ([]contract.Target, error) {
	var raw []map[string]dbus.Variant
	if err := c.call(ctx, "ListTargets").Store(&raw); err != nil {
		return nil, wrap("list the targets", err)
	}
	out := make([]contract.Target, 0, len(raw))
	for _, d := range raw {
		out = append(out, contract.TargetOf(d))
	}
	slices.SortFunc(out, func(a, b contract.Target) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
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
	return e.Name == contract.ErrorAccessDenied || e.Name == contract.ErrorInteractiveAuthorizationRequired
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
	case contract.ErrorAccessDenied:
		msg = "cannot " + what + ": not authorized: " + strings.TrimSuffix(msg, ".") +
			" (run it as root, ask for your user in the plan's allow_users, or let polkit ask: see subvault(1))"
	case contract.ErrorInteractiveAuthorizationRequired:
		msg = "cannot " + what + ": authorization needed, and no password can be asked here: run it from a terminal, or as root"
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected":
		msg = "cannot " + what + ": the daemon went away: " + msg
	default:
		msg = "cannot " + what + ": " + msg
	}
	return &Error{Name: derr.Name, Message: msg}
}
