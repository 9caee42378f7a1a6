package api

import (
	"fmt"
	"path"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/subvault/subvault/api/contract"
)

// properties is org.freedesktop.DBus.Properties of an object with one
// interface of read-only properties, and the store of their values: the
// server stores them and sends PropertiesChanged itself; this answers the
// calls, with the specification's errors.
//
// A stored map is never changed: a change stores a new one. So Get, GetAll
// and GetManagedObjects hand out what is stored as it is, without a copy
// and without a lock (godbus encodes a reply after the method returns,
// when the server may be storing the next values), and a job that has
// finished is never converted again: GetManagedObjects of 200 finished
// jobs encodes the maps made when each finished.
type properties struct {
	path    dbus.ObjectPath
	iface   string
	current atomic.Pointer[storedProperties]
}

type storedProperties struct {
	values map[string]dbus.Variant
	// ifaces is values under the interface's name, as GetManagedObjects
	// and InterfacesAdded carry them.
	ifaces map[string]map[string]dbus.Variant
}

// exportProperties exports iface's properties on path, with values, and
// returns their store.
func exportProperties(conn *dbus.Conn, path dbus.ObjectPath, iface string, values map[string]dbus.Variant) (*properties, error) {
	p := &properties{path: path, iface: iface}
	p.store(values)
	if err := conn.Export(p, path, contract.PropertiesInterface); err != nil {
		return nil, fmt.Errorf("cannot export %s: %w", path, err)
	}
	return p, nil
}

// store makes values the properties (the map is the store's from now on:
// the caller changes it no more) and returns those that differ from the
// ones before. Values equal to those stored are not stored: the map
// handed out so far stays.
func (p *properties) store(values map[string]dbus.Variant) map[string]dbus.Variant {
	before := p.current.Load()
	if before == nil {
		p.current.Store(&storedProperties{values: values, ifaces: map[string]map[string]dbus.Variant{p.iface: values}})
		return values
	}
	changed := changedProperties(before.values, values)
	if len(changed) > 0 || len(values) != len(before.values) {
		p.current.Store(&storedProperties{values: values, ifaces: map[string]map[string]dbus.Variant{p.iface: values}})
	}
	return changed
}

// values are the properties stored: not to be changed.
func (p *properties) values() map[string]dbus.Variant { return p.current.Load().values }

// interfaces are the properties under the interface's name: not to be
// changed.
func (p *properties) interfaces() map[string]map[string]dbus.Variant { return p.current.Load().ifaces }

// changedProperties are the properties of now that were not in before, or
// held another value.
func changedProperties(before, now map[string]dbus.Variant) map[string]dbus.Variant {
	changed := map[string]dbus.Variant{}
	for k, v := range now {
		if old, ok := before[k]; !ok || old.Signature() != v.Signature() || !reflect.DeepEqual(old.Value(), v.Value()) {
			changed[k] = v
		}
	}
	return changed
}

// Get answers one property of the object's interface.
func (p *properties) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	if iface != p.iface && iface != "" {
		return dbus.Variant{}, p.unknownInterface(iface)
	}
	v, ok := p.values()[name]
	if !ok {
		return dbus.Variant{}, p.unknownProperty(name)
	}
	return v, nil
}

// GetAll answers every property of the object's interface; an empty
// interface name means all of the object's, as sd-bus has it.
func (p *properties) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != p.iface && iface != "" {
		return nil, p.unknownInterface(iface)
	}
	return p.values(), nil
}

// Set refuses: every property of the contract is read-only.
func (p *properties) Set(iface, name string, _ dbus.Variant) *dbus.Error {
	if iface != p.iface && iface != "" {
		return p.unknownInterface(iface)
	}
	if _, ok := p.values()[name]; !ok {
		return p.unknownProperty(name)
	}
	return newError(contract.ErrorPropertyReadOnly, "property %s of %s is read-only; the daemon sets it", name, p.iface)
}

func (p *properties) unknownInterface(iface string) *dbus.Error {
	return newError(contract.ErrorUnknownInterface, "%s has no properties of interface %s; its properties are %s's", p.path, iface, p.iface)
}

func (p *properties) unknownProperty(name string) *dbus.Error {
	return newError(contract.ErrorUnknownProperty, "interface %s has no property %q; busctl introspect %s %s lists those it has",
		p.iface, name, contract.BusName, p.path)
}

// missingObject answers for the job and plan paths that have no object
// (a job that left the history, a plan gone on reload): exported for
// their subtrees, it is what godbus finds when no object has the path,
// where it would otherwise say that the object lacks the interface.
type missingObject struct{ kind, list string }

func (m missingObject) refuse(msg dbus.Message) *dbus.Error {
	at, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	return newError(contract.ErrorUnknownObject, "there is no %s object %s; %s lists those there are", m.kind, at, m.list)
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
		{jobs, contract.ManagerPath + "/job", contract.PropertiesInterface, true},
		{missingJob{jobs}, contract.ManagerPath + "/job", contract.JobInterface, true},
		{children{s, "job"}, contract.ManagerPath + "/job", contract.IntrospectableInterface, false},
		{plans, contract.ManagerPath + "/plan", contract.PropertiesInterface, true},
		{children{s, "plan"}, contract.ManagerPath + "/plan", contract.IntrospectableInterface, false},
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
