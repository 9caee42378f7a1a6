package api

import (
	"fmt"
	"path"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"
)

// properties is org.freedesktop.DBus.Properties of an object with one
// interface of read-only properties. prop keeps the values (the server
// sets them and sends PropertiesChanged itself); this answers the calls,
// with the specification's errors: prop's have names of its own and no
// message, which busctl shows as "Input/output error".
type properties struct {
	values *prop.Properties
	path   dbus.ObjectPath
	iface  string
}

// exportProperties exports props as iface's properties on path, answered
// by properties, and returns prop's store to set them in.
func exportProperties(conn *dbus.Conn, path dbus.ObjectPath, iface string, props map[string]*prop.Prop) (*prop.Properties, error) {
	values, err := prop.Export(conn, path, prop.Map{iface: props})
	if err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", path, err)
	}
	// Exported again on the same path and interface: this replaces prop's
	// own answers.
	if err := conn.Export(properties{values: values, path: path, iface: iface}, path, propertiesInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", path, err)
	}
	return values, nil
}

// Get answers one property of the object's interface.
func (p properties) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	if iface != p.iface && iface != "" {
		return dbus.Variant{}, p.unknownInterface(iface)
	}
	v, derr := p.values.Get(p.iface, name)
	if derr != nil {
		return dbus.Variant{}, p.unknownProperty(name)
	}
	return v, nil
}

// GetAll answers every property of the object's interface; an empty
// interface name means all of the object's, as sd-bus has it.
func (p properties) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != p.iface && iface != "" {
		return nil, p.unknownInterface(iface)
	}
	all, derr := p.values.GetAll(p.iface)
	if derr != nil {
		return nil, newError(ErrorFailed, "cannot read the properties of %s: %s", p.path, derr.Name)
	}
	return all, nil
}

// Set refuses: every property of the contract is read-only.
func (p properties) Set(iface, name string, _ dbus.Variant) *dbus.Error {
	if iface != p.iface && iface != "" {
		return p.unknownInterface(iface)
	}
	if _, derr := p.values.Get(p.iface, name); derr != nil {
		return p.unknownProperty(name)
	}
	return newError(ErrorPropertyReadOnly, "property %s of %s is read-only; the daemon sets it", name, p.iface)
}

func (p properties) unknownInterface(iface string) *dbus.Error {
	return newError(ErrorUnknownInterface, "%s has no properties of interface %s; its properties are %s's", p.path, iface, p.iface)
}

func (p properties) unknownProperty(name string) *dbus.Error {
	return newError(ErrorUnknownProperty, "interface %s has no property %q; busctl introspect %s %s lists those it has",
		p.iface, name, BusName, p.path)
}

// missingObject answers for the job and plan paths that have no object
// (a job that left the history, a plan gone on reload): exported for
// their subtrees, it is what godbus finds when no object has the path,
// where it would otherwise say that the object lacks the interface.
type missingObject struct{ kind, list string }

func (m missingObject) refuse(msg dbus.Message) *dbus.Error {
	at, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	return newError(ErrorUnknownObject, "there is no %s object %s; %s lists those there are", m.kind, at, m.list)
}

func (m missingObject) Get(msg dbus.Message, _, _ string) (dbus.Variant, *dbus.Error) {
	return dbus.Variant{}, m.refuse(msg)
}

func (m missingObject) GetAll(msg dbus.Message, _ string) (map[string]dbus.Variant, *dbus.Error) {
	return nil, m.refuse(msg)
}

func (m missingObject) Set(msg dbus.Message, _, _ string, _ dbus.Variant) *dbus.Error {
	return m.refuse(msg)
}

// missingJob adds Job.Cancel to missingObject.
type missingJob struct{ missingObject }

func (m missingJob) Cancel(msg dbus.Message) *dbus.Error { return m.refuse(msg) }

// exportMissing exports missingObject under the job and plan paths, and
// their introspection (the objects there), which godbus gave those paths
// before they had an object of their own.
func (s *Server) exportMissing() error {
	jobs := missingObject{kind: "job", list: "ListJobs"}
	plans := missingObject{kind: "plan", list: "ListPlans"}
	for _, e := range []struct {
		v       any
		path    dbus.ObjectPath
		iface   string
		subtree bool
	}{
		{jobs, ManagerPath + "/job", propertiesInterface, true},
		{missingJob{jobs}, ManagerPath + "/job", JobInterface, true},
		{children{s, "job"}, ManagerPath + "/job", introspectInterface, false},
		{plans, ManagerPath + "/plan", propertiesInterface, true},
		{children{s, "plan"}, ManagerPath + "/plan", introspectInterface, false},
	} {
		export := s.conn.Export
		if e.subtree {
			export = s.conn.ExportSubtree
		}
		if err := export(e.v, e.path, e.iface); err != nil {
			return fmt.Errorf("cannot export %s on %s: %w", e.iface, e.path, err)
		}
	}
	return nil
}

// children introspects /org/subvault/Subvault1/job or .../plan: the
// objects below it, for busctl tree and the like.
type children struct {
	s    *Server
	kind string
}

func (c children) Introspect() (string, *dbus.Error) {
	c.s.mu.Lock()
	var paths []dbus.ObjectPath
	if c.kind == "job" {
		for _, o := range c.s.jobs {
			paths = append(paths, o.path)
		}
	} else {
		for _, o := range c.s.plans {
			paths = append(paths, o.path)
		}
	}
	c.s.mu.Unlock()
	sortPaths(paths)
	var b strings.Builder
	b.WriteString(strings.TrimSpace(introspect.IntrospectDeclarationString) + "<node>")
	for _, p := range paths {
		fmt.Fprintf(&b, "<node name=%q/>", path.Base(string(p)))
	}
	b.WriteString("</node>")
	return b.String(), nil
}
