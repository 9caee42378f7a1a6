package client

import (
	"context"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
)

func propsChanged(id uint32, changed map[string]any) *dbus.Signal {
	m := map[string]dbus.Variant{}
	for k, v := range changed {
		m[k] = dbus.MakeVariant(v)
	}
	return &dbus.Signal{Path: contract.JobPath(id), Name: contract.PropertiesInterface + ".PropertiesChanged",
		Body: []any{contract.JobInterface, m, []string{}}}
}

// A signal sent before the watcher's first GetManagedObjects can arrive
// after it: the mirror must not take a finished job back to running, nor a
// running one back to queued (a follower would wait for an end that came).
func TestWatcherJobStateNeverGoesBack(t *testing.T) {
	w := &Watcher{plans: map[dbus.ObjectPath]*contract.Plan{}, jobs: map[dbus.ObjectPath]*contract.Job{}}
	ctx := context.Background()
	steps := []struct {
		sig  *dbus.Signal
		want contract.State
	}{
		{propsChanged(7, map[string]any{"State": "running", "Progress": 0.5}), contract.StateRunning},
		{&dbus.Signal{Path: contract.ManagerPath, Name: contract.ObjectManagerInterface + ".InterfacesAdded", Body: []any{
			contract.JobPath(7), map[string]map[string]dbus.Variant{contract.JobInterface: {
				"Id": dbus.MakeVariant(uint32(7)), "Kind": dbus.MakeVariant("backup"), "Plan": dbus.MakeVariant("home"),
				"State": dbus.MakeVariant("queued")}}}}, contract.StateRunning},
		{&dbus.Signal{Path: contract.ManagerPath, Name: contract.ManagerInterface + ".JobRemoved", Body: []any{
			uint32(7), contract.JobPath(7), "backup", "home", "done"}}, contract.StateFinished},
		{propsChanged(7, map[string]any{"State": "running", "Progress": 0.9}), contract.StateFinished},
	}
	for i, s := range steps {
		w.handle(ctx, s.sig)
		j, ok := w.Job(7)
		if !ok || j.State != s.want {
			t.Fatalf("step %d: job %+v, want state %s", i, j, s.want)
		}
	}
	j, _ := w.Job(7)
	if j.Kind != "backup" || j.Plan != "home" || j.Result != contract.ResultDone || j.Progress != 0.5 {
		t.Errorf("the mirror lost what the signals said: %+v", j)
	}
}
