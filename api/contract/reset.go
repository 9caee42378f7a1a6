package contract

import (
	"time"

	"github.com/godbus/dbus/v5"
)

// LastReset is the last boot's reset, the manager's LastReset property
// (docs/reset.md): when it ran, and of its subvolumes the one with the
// worst result (failed, then skipped, then done).
type LastReset struct {
	Time   time.Time `json:"time"`
	Path   string    `json:"path"`
	Result string    `json:"result"` // done, skipped or failed
	Reason string    `json:"reason,omitempty"`
	State  string    `json:"state,omitempty"` // the previous state's snapshot name
}

// The results of a reset.
const (
	ResetDone    = "done"
	ResetSkipped = "skipped"
	ResetFailed  = "failed"
)

// lastResetProperty is LastReset as the bus carries it: a{sv} with Time
// (unix seconds), Path, Result, Reason and State; empty when there is none.
func lastResetProperty(r *LastReset) map[string]dbus.Variant {
	if r == nil || r.Time.IsZero() {
		return map[string]dbus.Variant{}
	}
	return map[string]dbus.Variant{
		"Time":   dbus.MakeVariant(r.Time.Unix()),
		"Path":   dbus.MakeVariant(r.Path),
		"Result": dbus.MakeVariant(r.Result),
		"Reason": dbus.MakeVariant(r.Reason),
		"State":  dbus.MakeVariant(r.State),
	}
}

// lastResetOf reads the LastReset property; nil when empty or without a time.
func lastResetOf(v dbus.Variant) *LastReset {
	m, _ := v.Value().(map[string]dbus.Variant)
	t, ok := m["Time"].Value().(int64)
	if !ok || t == 0 {
		return nil
	}
	return &LastReset{Time: time.Unix(t, 0), Path: str(m["Path"]), Result: str(m["Result"]), Reason: str(m["Reason"]), State: str(m["State"])}
}
