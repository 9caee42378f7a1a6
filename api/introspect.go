package api

import (
	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"

	"github.com/subvault/subvault/api/contract"
)

func in(name, typ string) introspect.Arg {
	return introspect.Arg{Name: name, Type: typ, Direction: "in"}
}
func out(name, typ string) introspect.Arg {
	return introspect.Arg{Name: name, Type: typ, Direction: "out"}
}
func sig(name, typ string) introspect.Arg { return introspect.Arg{Name: name, Type: typ} }

// property is one read-only property; emits is "true" (PropertiesChanged
// carries the new value) or "const".
func property(name, typ, emits string) introspect.Property {
	return introspect.Property{Name: name, Type: typ, Access: "read", Annotations: []introspect.Annotation{
		{Name: "org.freedesktop.DBus.Property.EmitsChangedSignal", Value: emits},
	}}
}

// managerIntrospection is org.subvault.Subvault1.Manager as the contract,
// docs/dbus-api.md, defines it.
var managerIntrospection = introspect.Interface{
	Name: contract.ManagerInterface,
	Methods: []introspect.Method{
		{Name: "ListPlans", Args: []introspect.Arg{out("plans", "a(so)")}},
		{Name: "ListJobs", Args: []introspect.Arg{out("jobs", "a(usssso)")}},
		{Name: "StartBackup", Args: []introspect.Arg{in("plan", "s"), out("id", "u"), out("job", "o")}},
		{Name: "StartPrune", Args: []introspect.Arg{in("plan", "s"), out("id", "u"), out("job", "o")}},
		{Name: "StartCheck", Args: []introspect.Arg{in("plan", "s"), out("id", "u"), out("job", "o")}},
		{Name: "StartCopy", Args: []introspect.Arg{in("plan", "s"), out("id", "u"), out("job", "o")}},
		{Name: "StartSend", Args: []introspect.Arg{in("plan", "s"), in("target", "s"), out("id", "u"), out("job", "o")}},
		{Name: "ListTargets", Args: []introspect.Arg{out("targets", "aa{sv}")}},
		{Name: "TargetAppeared", Args: []introspect.Arg{in("uuid", "s")}},
		{Name: "StartRestore", Args: []introspect.Arg{in("plan", "s"), in("archive", "s"), in("target", "s"), in("include", "as"), out("id", "u"), out("job", "o")}},
		{Name: "StartRestoreWith", Args: []introspect.Arg{in("plan", "s"), in("archive", "s"), in("target", "s"), in("include", "as"), in("options", "a{sv}"), out("id", "u"), out("job", "o")}},
		{Name: "CancelJob", Args: []introspect.Arg{in("id", "u")}},
		{Name: "ListSnapshots", Args: []introspect.Arg{in("plan", "s"), out("snapshots", "a(sstb)")}},
		{Name: "ListArchives", Args: []introspect.Arg{in("plan", "s"), out("archives", "a(stsasas)")}},
		{Name: "DeleteSnapshot", Args: []introspect.Arg{in("plan", "s"), in("name", "s")}},
		{Name: "CloneSnapshot", Args: []introspect.Arg{in("plan", "s"), in("name", "s"), in("target", "s"), out("path", "s")}},
		{Name: "Diff", Args: []introspect.Arg{in("plan", "s"), in("a", "s"), in("b", "s"), out("changes", "a(ss)")}},
		{Name: "DiffTo", Args: []introspect.Arg{in("plan", "s"), in("a", "s"), in("b", "s"), in("fd", "h"), in("options", "a{sv}"), out("count", "t")}},
		{Name: "GetJobFiles", Args: []introspect.Arg{in("id", "u"), out("files", "as")}},
		{Name: "Rollback", Args: []introspect.Arg{in("plan", "s"), in("snapshot", "s"), in("subvolume", "s"), in("options", "a{sv}"), out("kept", "s"), out("message", "s")}},
		{Name: "Reload"},
	},
	Properties: []introspect.Property{
		property("Version", "s", "const"),
		property("State", "s", "true"),
		property("Plans", "as", "true"),
		property("RunningJobs", "ao", "true"),
		property("QueuedJobs", "ao", "true"),
		property("LastReset", "a{sv}", "const"),
	},
	Signals: []introspect.Signal{
		{Name: "JobNew", Args: []introspect.Arg{sig("id", "u"), sig("job", "o"), sig("kind", "s"), sig("plan", "s")}},
		{Name: "JobRemoved", Args: []introspect.Arg{sig("id", "u"), sig("job", "o"), sig("kind", "s"), sig("plan", "s"), sig("result", "s")}},
	},
}

var jobIntrospection = introspect.Interface{
	Name:    contract.JobInterface,
	Methods: []introspect.Method{{Name: "Cancel"}},
	Properties: []introspect.Property{
		property("Id", "u", "const"),
		property("Kind", "s", "const"),
		property("Plan", "s", "const"),
		property("State", "s", "true"),
		property("Result", "s", "true"),
		property("Trigger", "s", "const"),
		property("Callers", "au", "true"),
		property("Triggers", "as", "true"),
		property("Progress", "d", "true"),
		property("BytesDone", "t", "true"),
		property("BytesTotal", "t", "true"),
		property("FilesDone", "t", "true"),
		property("FilesTotal", "t", "true"),
		property("SecondsRemaining", "t", "true"),
		property("CurrentFiles", "as", "true"),
		property("WaitingSince", "t", "true"),
		property("Waiting", "s", "true"),
		property("Stalled", "b", "true"),
		property("StalledSince", "t", "true"),
		property("StallTimeout", "t", "true"),
		property("QueuedAt", "t", "const"),
		property("StartedAt", "t", "true"),
		property("FinishedAt", "t", "true"),
		property("Error", "s", "true"),
		property("ArchiveId", "s", "true"),
		property("Summary", "a{sv}", "true"),
		property("SendTarget", "s", "const"),
	},
}

var planIntrospection = introspect.Interface{
	Name: contract.PlanInterface,
	Properties: []introspect.Property{
		property("Name", "s", "const"),
		property("Subvolumes", "as", "true"),
		property("Repository", "s", "true"),
		property("Schedule", "s", "true"),
		property("NextRun", "t", "true"),
		property("LastBackup", "t", "true"),
		property("LastResult", "s", "true"),
		property("LastError", "s", "true"),
		property("LastSuccess", "t", "true"),
		property("Health", "s", "true"),
		property("HealthReason", "s", "true"),
		property("Waiting", "s", "true"),
		property("RetryAt", "t", "true"),
		property("Targets", "a(sxb)", "true"),
	},
}

var objectManagerIntrospection = introspect.Interface{
	Name: contract.ObjectManagerInterface,
	Methods: []introspect.Method{
		{Name: "GetManagedObjects", Args: []introspect.Arg{out("objects", "a{oa{sa{sv}}}")}},
	},
	Signals: []introspect.Signal{
		{Name: "InterfacesAdded", Args: []introspect.Arg{sig("object", "o"), sig("interfaces", "a{sa{sv}}")}},
		{Name: "InterfacesRemoved", Args: []introspect.Arg{sig("object", "o"), sig("interfaces", "as")}},
	},
}

// node is the introspection of one object: Properties and ifaces.
// introspect.NewIntrospectable adds Introspectable and Peer; given either,
// godbus v5.2.4 lists Peer twice, which busctl refuses.
func node(children []string, ifaces ...introspect.Interface) *introspect.Node {
	n := &introspect.Node{Interfaces: append([]introspect.Interface{prop.IntrospectData}, ifaces...)}
	for _, c := range children {
		n.Children = append(n.Children, introspect.Node{Name: c})
	}
	return n
}

// Introspection returns the interfaces the daemon serves, by name: the
// Manager, Job, Plan and ObjectManager interfaces.
func Introspection() map[string]introspect.Interface {
	return map[string]introspect.Interface{
		contract.ManagerInterface: managerIntrospection, contract.JobInterface: jobIntrospection,
		contract.PlanInterface: planIntrospection, contract.ObjectManagerInterface: objectManagerIntrospection,
	}
}
