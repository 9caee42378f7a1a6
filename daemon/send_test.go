package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/robfig/cron/v3"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/onsite"
	"github.com/subvault/subvault/daemon/queue"
)

// A send's target: one of the plan's send_to, or none when it has one;
// the refusals name what to give or to configure.
func TestSendTarget(t *testing.T) {
	one := &config.Plan{Name: "home", SendTo: []string{"usb"}}
	two := &config.Plan{Name: "home", SendTo: []string{"usb", "disk"}}
	none := &config.Plan{Name: "home"}
	for _, c := range []struct {
		plan   *config.Plan
		target string
		want   string // the target, or what the refusal says
		ok     bool
	}{
		{one, "", "usb", true},
		{one, "usb", "usb", true},
		{two, "disk", "disk", true},
		{two, "", "plan home sends to usb, disk: name one of them", false},
		{one, "nas", `plan home does not send to "nas" (its send_to: usb)`, false},
		{none, "", "plan home has no send_to", false},
		{none, "usb", "add send_to: [TARGET] to plans.home", false},
	} {
		got, err := sendTarget(c.plan, c.target)
		switch {
		case c.ok && (err != nil || got != c.want):
			t.Errorf("%v %q: %q, %v; want %q", c.plan.SendTo, c.target, got, err, c.want)
		case !c.ok && (err == nil || !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v %q: %q, %v; want an invalid argument saying %q", c.plan.SendTo, c.target, got, err, c.want)
		}
	}
}

// A plan's send_schedule is a scheduler entry of kind send; the send
// orders are one per target.
func TestSendScheduleEntryAndOrders(t *testing.T) {
	spec, err := cron.ParseStandard("@daily")
	if err != nil {
		t.Fatal(err)
	}
	plan := &config.Plan{Name: "home", SendTo: []string{"usb", "disk"}, SendSchedule: "@daily", SendSpec: spec}
	cfg := &config.Config{Plans: map[string]*config.Plan{"home": plan}}
	d := &Daemon{}
	var kinds []string
	for _, e := range d.entries(cfg) {
		kinds = append(kinds, e.Plan+"/"+e.Kind)
	}
	if strings.Join(kinds, ",") != "home/send" {
		t.Errorf("entries %v, want home/send alone", kinds)
	}
	orders := sendOrders(plan, queue.TriggerSchedule, -1)
	if len(orders) != 2 || orders[0].Send.SendTarget != "usb" || orders[1].Send.SendTarget != "disk" || orders[0].Kind != queue.KindSend {
		t.Errorf("orders %+v, want a send to usb and one to disk", orders)
	}
}

// A send's summary says what a person asks first: how many bytes, full
// or incremental, from which parent.
func TestSendSummary(t *testing.T) {
	if s := sendSummary(onsite.Result{}); s != nil {
		t.Errorf("the summary of nothing: %v", s)
	}
	s := sendSummary(onsite.Result{Target: "usb", Where: "/mnt/usb/subvault", Sent: []onsite.Sent{
		{Subvolume: "/home", Snapshot: "s2", Parent: "s1", Bytes: 4096},
		{Subvolume: "/srv", Snapshot: "t2", FullReason: "first send to the target", Bytes: 1 << 20},
	}})
	if s["target"] != "usb" || s["bytes_sent"] != uint64(4096+1<<20) || s["full"] != true || s["where"] != "/mnt/usb/subvault" {
		t.Errorf("summary %v", s)
	}
	sent, _ := s["sent"].([]map[string]any)
	if len(sent) != 2 || sent[0]["parent"] != "s1" || sent[1]["full_reason"] != "first send to the target" {
		t.Errorf("sent %v", sent)
	}
}
