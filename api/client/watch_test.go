package client

import (
	"context"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api"
)

func propsChanged(id uint32, changed map[string]any) *dbus.Signal {
	m := map[string]dbus.Variant{}
	for k, v := range changed {
		m[k] = dbus.MakeVariant(v)
	}
	return &dbus.Signal{Path: api.JobPath(id), Name: "org.freedesktop.DBus.Properties.PropertiesChanged",
		Body: []any{api.JobInterface, m, []string{}}}
}

// A signal sent before the watcher's first GetManagedObjects can arrive
// after it: the mirror must not take a finished job back to running, nor a
// running one back to queued (a follower would wait for an end that came).
func TestWatcherJobStateNeverGoesBack(t *testing.T) {
	w := &Watcher{plans: map[dbus.ObjectPath]*Plan{}, jobs: map[dbus.ObjectPath]*Job{}}
	ctx := context.Background()
	steps := []struct {
		sig  *dbus.Signal
		want string
	}{
		{propsChanged(7, map[string]any{"State": "running", "Progress": 0.5}), StateRunning},
		{&dbus.Signal{Path: api.ManagerPath, Name: api.ObjectManagerInterface + ".InterfacesAdded", Body: []any{
			api.JobPath(7), map[string]map[string]dbus.Variant{api.JobInterface: {
				"Id": dbus.MakeVariant(uint32(7)), "Kind": dbus.MakeVariant("backup"), "Plan": dbus.MakeVariant("home"),
				"State": dbus.MakeVariant("queued")}}}}, StateRunning},
		{&dbus.Signal{Path: api.ManagerPath, Name: api.ManagerInterface + ".JobRemoved", Body: []any{
			uint32(7), api.JobPath(7), "backup", "home", "done"}}, StateFinished},
		{propsChanged(7, map[string]any{"State": "running", "Progress": 0.9}), StateFinished},
	}
	for i, s := range steps {
		w.handle(ctx, s.sig)
		j, ok := w.Job(7)
		if !ok || j.State != s.want {
			t.Fatalf("step %d: job %+v, want state %s", i, j, s.want)
		}
	}
	j, _ := w.Job(7)
	if j.Kind != "backup" || j.Plan != "home" || j.Result != ResultDone || j.Progress != 0.5 {
		t.Errorf("the mirror lost what the signals said: %+v", j)
	}
}

func TestJobIDFromPath(t *testing.T) {
	for path, want := range map[dbus.ObjectPath]uint32{api.JobPath(1): 1, api.JobPath(4294967295): 4294967295} {
		if id, ok := JobID(path); !ok || id != want {
			t.Errorf("JobID(%s) = %d, %v", path, id, ok)
		}
	}
	for _, p := range []dbus.ObjectPath{"/org/subvault/Subvault1/job/", "/org/subvault/Subvault1/job/01", "/org/subvault/Subvault1/job/x", "/org/subvault/Subvault1/plan/home"} {
		if _, ok := JobID(p); ok {
			t.Errorf("JobID(%s) accepted", p)
		}
	}
}
