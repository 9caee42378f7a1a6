package api

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/queue"
)

// jobObject is /org/subvault/Subvault1/job/<id>. Get and GetAll answer
// its newest properties at once; the PropertiesChanged signals are the
// server's, one per flush with every property that changed, throttled.
type jobObject struct {
	id     uint32
	path   dbus.ObjectPath
	plan   string
	caller int64
	props  *properties
	shown  map[string]dbus.Variant // as last announced

	lastEmit time.Time
	due      time.Time  // when the throttled changes go out
	final    *queue.Job // finished: JobRemoved goes out with the final state
}

// wireJob is j as its object shows it: every name valid UTF-8, messages one
// bounded line, no file names.
func wireJob(j queue.Job) contract.Job {
	return contract.Job{
		ID:               j.ID,
		Kind:             j.Kind,
		Plan:             j.Plan,
		State:            j.State,
		Result:           j.Result,
		Trigger:          contract.EscapeInvalidUTF8(string(j.Trigger)),
		Callers:          j.Callers(),
		Triggers:         escapeTriggers(j.Triggers()),
		Progress:         finite(j.Progress),
		BytesDone:        j.BytesDone,
		BytesTotal:       j.BytesTotal,
		FilesDone:        j.FilesDone,
		FilesTotal:       j.FilesTotal,
		SecondsRemaining: j.SecondsRemaining,
		// File names are not for everyone on the bus: GetJobFiles gives
		// them to those with the restore authorization.
		CurrentFiles: []string{},
		WaitingSince: j.WaitingSince,
		Waiting:      boundedLine(j.Waiting),
		Stalled:      !j.StalledSince.IsZero(),
		StalledSince: j.StalledSince,
		StallTimeout: uint64(j.StallTimeout / time.Second),
		QueuedAt:     j.QueuedAt,
		StartedAt:    j.StartedAt,
		FinishedAt:   j.FinishedAt,
		Error:        boundedLine(j.Error),
		ArchiveID:    contract.EscapeInvalidUTF8(j.ArchiveID),
		Summary:      summaryValues(j.Summary),
		SendTarget:   j.SendTarget,
	}
}

// exportJob exports j's object; mu is held.
func (s *Server) exportJob(j queue.Job) (*jobObject, error) {
	o := &jobObject{id: j.ID, path: contract.JobPath(j.ID), plan: j.Plan, caller: j.Caller}
	var err error
	if o.props, err = exportProperties(s.conn, o.path, contract.JobInterface, wireJob(j).Properties()); err != nil {
		return nil, err
	}
	o.shown = o.props.values()
	if err := s.conn.Export(jobMethods{s: s, id: j.ID}, o.path, contract.JobInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	if err := s.conn.Export(introspect.NewIntrospectable(node(nil, jobIntrospection)), o.path, contract.IntrospectableInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	s.jobs[j.ID] = o
	return o, nil
}

func (s *Server) unexportJob(o *jobObject) {
	for _, iface := range []string{contract.JobInterface, contract.PropertiesInterface, contract.IntrospectableInterface} {
		_ = s.conn.Export(nil, o.path, iface)
	}
	delete(s.jobs, o.id)
	delete(s.throttled, o.id)
}

// set takes the job's new values into its properties.
func (o *jobObject) set(j queue.Job) {
	o.props.store(wireJob(j).Properties())
}

// changed returns the properties changed since the last announcement and
// counts them as announced.
func (o *jobObject) changed() map[string]dbus.Variant {
	now := o.props.values()
	changed := changedProperties(o.shown, now)
	o.shown = now
	return changed
}

func (o *jobObject) interfaces() map[string]map[string]dbus.Variant { return o.props.interfaces() }

// planObject is /org/subvault/Subvault1/plan/<escaped name>.
type planObject struct {
	name  string
	path  dbus.ObjectPath
	props *properties
}

// wirePlan is p as its object shows it.
func wirePlan(p daemon.PlanInfo) contract.Plan {
	return contract.Plan{
		Name:         p.Name,
		Subvolumes:   contract.EscapeAll(p.Subvolumes),
		Repository:   p.Repository,
		Schedule:     contract.EscapeInvalidUTF8(p.Schedule),
		NextRun:      p.NextRun,
		LastBackup:   p.LastBackup,
		LastResult:   p.LastResult,
		LastError:    boundedLine(p.LastError),
		LastSuccess:  p.LastSuccess,
		Health:       p.Health,
		HealthReason: boundedLine(p.HealthReason),
		Waiting:      boundedLine(p.Waiting),
		RetryAt:      p.RetryAt,
		Targets:      wirePlanTargets(p.Targets),
	}
}

func (s *Server) exportPlan(p daemon.PlanInfo) (*planObject, error) {
	o := &planObject{name: p.Name, path: contract.PlanPath(p.Name)}
	var err error
	if o.props, err = exportProperties(s.conn, o.path, contract.PlanInterface, wirePlan(p).Properties()); err != nil {
		return nil, err
	}
	// The Plan interface has no methods; exporting an empty method set
	// still makes the object answer for the interface.
	if err := s.conn.ExportMethodTable(map[string]any{}, o.path, contract.PlanInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	if err := s.conn.Export(introspect.NewIntrospectable(node(nil, planIntrospection)), o.path, contract.IntrospectableInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	s.plans[p.Name] = o
	return o, nil
}

func (s *Server) unexportPlan(o *planObject) {
	for _, iface := range []string{contract.PlanInterface, contract.PropertiesInterface, contract.IntrospectableInterface} {
		_ = s.conn.Export(nil, o.path, iface)
	}
	delete(s.plans, o.name)
}

// set takes the plan's new values and returns those that changed.
func (o *planObject) set(p daemon.PlanInfo) map[string]dbus.Variant {
	return o.props.store(wirePlan(p).Properties())
}

func (o *planObject) interfaces() map[string]map[string]dbus.Variant { return o.props.interfaces() }

// objectManager is org.freedesktop.DBus.ObjectManager on the manager.
type objectManager struct{ s *Server }

// GetManagedObjects returns every plan and job object with its properties.
func (m objectManager) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	out := make(map[dbus.ObjectPath]map[string]map[string]dbus.Variant, len(m.s.jobs)+len(m.s.plans))
	for _, o := range m.s.plans {
		out[o.path] = o.interfaces()
	}
	for _, o := range m.s.jobs {
		out[o.path] = o.interfaces()
	}
	return out, nil
}

// jobMethods is org.subvault.Subvault1.Job's method on one job object.
type jobMethods struct {
	s  *Server
	id uint32
}

// Cancel cancels the job, as CancelJob does.
func (j jobMethods) Cancel(msg dbus.Message, sender dbus.Sender) *dbus.Error {
	if err := checkSignature(msg, ""); err != nil {
		return err
	}
	return j.s.cancel(msg, sender, j.id)
}

// maxErrorBytes bounds a job's Error and a plan's LastError on the bus:
// restic's messages are kept up to some 100 KiB, and job_history jobs of
// that in GetManagedObjects would pass the bus's message limit. The daemon's
// log has the whole message.
const maxErrorBytes = 4096

// boundedLine is an error message as a property carries it: one line,
// valid UTF-8, at most maxErrorBytes (cut at a character, marked " [...]").
func boundedLine(s string) string {
	s = oneLine(contract.EscapeInvalidUTF8(s))
	if len(s) <= maxErrorBytes {
		return s
	}
	const mark = " [...]"
	cut := maxErrorBytes - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// summaryValues turns restic's summary (numbers as json.Number) into
// what a{sv} carries: whole numbers as uint64 (t; int64, x, when
// negative), others as float64 (d), strings, booleans, anything else as
// its JSON text; keys and strings valid UTF-8.
func summaryValues(summary map[string]any) map[string]any {
	out := make(map[string]any, len(summary))
	for k, v := range summary {
		k = contract.EscapeInvalidUTF8(k)
		switch v := v.(type) {
		case json.Number:
			if n, err := v.Int64(); err == nil {
				if n >= 0 {
					out[k] = uint64(n)
				} else {
					out[k] = n
				}
			} else if f, err := v.Float64(); err == nil {
				out[k] = finite(f)
			} else {
				out[k] = v.String()
			}
		case float64:
			if v == math.Trunc(v) && v >= 0 && v < 1<<63 {
				out[k] = uint64(v)
			} else {
				out[k] = finite(v)
			}
		case string:
			out[k] = contract.EscapeInvalidUTF8(v)
		case bool:
			out[k] = v
		case nil:
		default:
			data, err := json.Marshal(v)
			if err == nil {
				out[k] = contract.EscapeInvalidUTF8(string(data))
			}
		}
	}
	return out
}

func escapeTriggers(list []queue.Trigger) []string {
	out := make([]string, len(list))
	for i, t := range list {
		out[i] = contract.EscapeInvalidUTF8(string(t))
	}
	return out
}
