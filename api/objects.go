package api

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"time"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"

	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/queue"
)

// jobObject is /org/subvault/Subvault1/job/<id>. Its properties live in a
// prop.Properties (Get and GetAll answer the newest values at once); the
// PropertiesChanged signals are the server's, one per flush with every
// property that changed, throttled.
type jobObject struct {
	id     uint32
	path   dbus.ObjectPath
	plan   string
	caller int64
	props  *prop.Properties
	values map[string]any // as set
	shown  map[string]any // as last announced

	lastEmit time.Time
	due      time.Time  // when the throttled changes go out
	final    *queue.Job // finished: JobRemoved goes out with the final state
}

// jobValues are the Job interface's properties of j.
func jobValues(j queue.Job) map[string]any {
	return map[string]any{
		"Id": j.ID, "Kind": string(j.Kind), "Plan": j.Plan, "State": string(j.State), "Result": string(j.Result),
		"Trigger": escapeInvalidUTF8(string(j.Trigger)), "Progress": finite(j.Progress),
		"Callers": j.Callers(), "Triggers": escapeAll(j.Triggers()),
		"BytesDone": j.BytesDone, "BytesTotal": j.BytesTotal, "FilesDone": j.FilesDone, "FilesTotal": j.FilesTotal,
		// File names are not for everyone on the bus: GetJobFiles gives
		// them to those with the restore authorization.
		"SecondsRemaining": j.SecondsRemaining, "CurrentFiles": []string{},
		"QueuedAt": micros(j.QueuedAt), "StartedAt": micros(j.StartedAt), "FinishedAt": micros(j.FinishedAt),
		"Error": boundedLine(j.Error), "ArchiveId": escapeInvalidUTF8(j.ArchiveID),
		"Summary": summaryVariants(j.Summary),
	}
}

// exportJob exports j's object; mu is held.
func (s *Server) exportJob(j queue.Job) (*jobObject, error) {
	o := &jobObject{id: j.ID, path: JobPath(j.ID), plan: j.Plan, caller: j.Caller, values: jobValues(j), shown: jobValues(j)}
	// prop gets values of its own: SetMust stores a map into the map it
	// holds, in place, which must not change ours.
	props := map[string]*prop.Prop{}
	for k, v := range jobValues(j) {
		props[k] = &prop.Prop{Value: v, Emit: prop.EmitFalse}
	}
	var err error
	if o.props, err = exportProperties(s.conn, o.path, JobInterface, props); err != nil {
		return nil, err
	}
	if err := s.conn.Export(jobMethods{s: s, id: j.ID}, o.path, JobInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	if err := s.conn.Export(introspect.NewIntrospectable(node(nil, jobIntrospection)), o.path, introspectInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	s.jobs[j.ID] = o
	return o, nil
}

func (s *Server) unexportJob(o *jobObject) {
	for _, iface := range []string{JobInterface, propertiesInterface, introspectInterface} {
		_ = s.conn.Export(nil, o.path, iface)
	}
	delete(s.jobs, o.id)
	delete(s.throttled, o.id)
}

// set takes the job's new values into its properties. (prop stores a map
// by adding its keys to the map it has; Summary, the one map, is set once,
// when the job finishes, so no stale key stays.)
func (o *jobObject) set(j queue.Job) {
	for k, v := range jobValues(j) {
		if !reflect.DeepEqual(o.values[k], v) {
			o.props.SetMust(JobInterface, k, v)
			o.values[k] = v
		}
	}
}

// changed returns the properties changed since the last announcement and
// counts them as announced.
func (o *jobObject) changed() map[string]dbus.Variant {
	return diff(o.values, o.shown)
}

func (o *jobObject) interfaces() map[string]map[string]dbus.Variant {
	all, _ := o.props.GetAll(JobInterface)
	return map[string]map[string]dbus.Variant{JobInterface: all}
}

func diff(values, shown map[string]any) map[string]dbus.Variant {
	changed := map[string]dbus.Variant{}
	for k, v := range values {
		if !reflect.DeepEqual(shown[k], v) {
			changed[k] = dbus.MakeVariant(v)
			shown[k] = v
		}
	}
	return changed
}

func copyValues(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// planObject is /org/subvault/Subvault1/plan/<escaped name>.
type planObject struct {
	name   string
	path   dbus.ObjectPath
	props  *prop.Properties
	values map[string]any
}

func planValues(p daemon.PlanInfo) map[string]any {
	return map[string]any{
		"Name": p.Name, "Subvolumes": escapeAll(p.Subvolumes), "Repository": p.Repository,
		"Schedule": escapeInvalidUTF8(p.Schedule), "NextRun": micros(p.NextRun),
		"LastBackup": micros(p.LastBackup), "LastResult": string(p.LastResult),
		"LastError": boundedLine(p.LastError), "LastSuccess": micros(p.LastSuccess),
	}
}

func (s *Server) exportPlan(p daemon.PlanInfo) (*planObject, error) {
	o := &planObject{name: p.Name, path: PlanPath(p.Name), values: planValues(p)}
	props := map[string]*prop.Prop{}
	for k, v := range planValues(p) { // prop's own, as in exportJob
		props[k] = &prop.Prop{Value: v, Emit: prop.EmitFalse}
	}
	var err error
	if o.props, err = exportProperties(s.conn, o.path, PlanInterface, props); err != nil {
		return nil, err
	}
	// The Plan interface has no methods; exporting an empty method set
	// still makes the object answer for the interface.
	if err := s.conn.ExportMethodTable(map[string]any{}, o.path, PlanInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	if err := s.conn.Export(introspect.NewIntrospectable(node(nil, planIntrospection)), o.path, introspectInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", o.path, err)
	}
	s.plans[p.Name] = o
	return o, nil
}

func (s *Server) unexportPlan(o *planObject) {
	for _, iface := range []string{PlanInterface, propertiesInterface, introspectInterface} {
		_ = s.conn.Export(nil, o.path, iface)
	}
	delete(s.plans, o.name)
}

// set takes the plan's new values and returns those that changed.
func (o *planObject) set(p daemon.PlanInfo) map[string]dbus.Variant {
	shown := copyValues(o.values)
	for k, v := range planValues(p) {
		if !reflect.DeepEqual(o.values[k], v) {
			o.props.SetMust(PlanInterface, k, v)
			o.values[k] = v
		}
	}
	return diff(o.values, shown)
}

func (o *planObject) interfaces() map[string]map[string]dbus.Variant {
	all, _ := o.props.GetAll(PlanInterface)
	return map[string]map[string]dbus.Variant{PlanInterface: all}
}

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
	s = oneLine(escapeInvalidUTF8(s))
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

func micros(t time.Time) uint64 {
	if t.IsZero() || t.UnixMicro() < 0 {
		return 0
	}
	return uint64(t.UnixMicro())
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// summaryVariants turns restic's summary (numbers as json.Number) into
// a{sv}: whole numbers as t (x when negative), others as d, strings as s,
// booleans as b, anything else as its JSON text.
func summaryVariants(summary map[string]any) map[string]dbus.Variant {
	out := make(map[string]dbus.Variant, len(summary))
	for k, v := range summary {
		k = escapeInvalidUTF8(k)
		switch v := v.(type) {
		case json.Number:
			if n, err := v.Int64(); err == nil {
				if n >= 0 {
					out[k] = dbus.MakeVariant(uint64(n))
				} else {
					out[k] = dbus.MakeVariant(n)
				}
			} else if f, err := v.Float64(); err == nil {
				out[k] = dbus.MakeVariant(finite(f))
			} else {
				out[k] = dbus.MakeVariant(v.String())
			}
		case float64:
			if v == math.Trunc(v) && v >= 0 && v < 1<<63 {
				out[k] = dbus.MakeVariant(uint64(v))
			} else {
				out[k] = dbus.MakeVariant(finite(v))
			}
		case string:
			out[k] = dbus.MakeVariant(escapeInvalidUTF8(v))
		case bool:
			out[k] = dbus.MakeVariant(v)
		case nil:
		default:
			data, err := json.Marshal(v)
			if err == nil {
				out[k] = dbus.MakeVariant(escapeInvalidUTF8(string(data)))
			}
		}
	}
	return out
}
