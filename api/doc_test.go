package api

import (
	"encoding/xml"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/subvault/subvault/api/contract"
)

const apiDoc = "../docs/dbus-api.md"

var xmlBlockRE = regexp.MustCompile("(?s)```xml\n(.*?)```")

// docInterfaces reads the interfaces from the fenced XML blocks of
// docs/dbus-api.md.
func docInterfaces() (map[string]introspect.Interface, error) {
	data, err := os.ReadFile(apiDoc)
	if err != nil {
		return nil, err
	}
	out := map[string]introspect.Interface{}
	for _, m := range xmlBlockRE.FindAllSubmatch(data, -1) {
		var n introspect.Node
		if err := xml.Unmarshal(m[1], &n); err != nil {
			return nil, fmt.Errorf("%s: an XML block does not parse: %w", apiDoc, err)
		}
		for _, i := range n.Interfaces {
			if _, dup := out[i.Name]; dup {
				return nil, fmt.Errorf("%s: interface %s twice", apiDoc, i.Name)
			}
			out[i.Name] = i
		}
	}
	return out, nil
}

// interfaceShape is what a client depends on: names, argument types and
// directions, property types and access, one per line, sorted.
func interfaceShape(i introspect.Interface) string {
	var lines []string
	args := func(list []introspect.Arg, dir string) string {
		var s []string
		for _, a := range list {
			d := a.Direction
			if d == "" {
				d = dir
			}
			if d == dir {
				s = append(s, a.Type)
			}
		}
		return strings.Join(s, ",")
	}
	for _, m := range i.Methods {
		lines = append(lines, fmt.Sprintf("method %s(%s) -> (%s)", m.Name, args(m.Args, "in"), args(m.Args, "out")))
	}
	for _, p := range i.Properties {
		lines = append(lines, fmt.Sprintf("property %s %s %s", p.Name, p.Type, p.Access))
	}
	for _, s := range i.Signals {
		lines = append(lines, fmt.Sprintf("signal %s(%s)", s.Name, args(s.Args, "out")))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// The doc's XML is the interfaces as built, and every name in them
// appears in the doc's prose tables too.
func TestDocMatchesInterfaces(t *testing.T) {
	doc, err := docInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(apiDoc)
	for name, built := range Introspection() {
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s has no XML block for %s", apiDoc, name)
			continue
		}
		if g, w := interfaceShape(built), interfaceShape(d); g != w {
			t.Errorf("%s: built\n%s\n%s says\n%s", name, g, apiDoc, w)
		}
		var names []string
		for _, m := range built.Methods {
			names = append(names, m.Name)
		}
		for _, p := range built.Properties {
			names = append(names, p.Name)
		}
		for _, s := range built.Signals {
			names = append(names, s.Name)
		}
		for _, n := range names {
			if !strings.Contains(string(data), "`"+n+"`") {
				t.Errorf("%s does not describe %s.%s in its text", apiDoc, name, n)
			}
		}
	}
	for _, e := range []string{contract.ErrorNoSuchPlan, contract.ErrorNoSuchJob, contract.ErrorNoSuchSnapshot, contract.ErrorNoSuchArchive, contract.ErrorInvalidArgument, contract.ErrorInvalidConfig, contract.ErrorFailed, contract.ErrorAccessDenied, contract.ErrorLimitsExceeded} {
		if !strings.Contains(string(data), e) {
			t.Errorf("%s does not name the error %s", apiDoc, e)
		}
	}
}

// The contract's tables in docs/dbus-api.md agree with the XML:
// | `Name` | `in` | `out` | rows.
func TestDocTablesMatchInterfaces(t *testing.T) {
	data, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	methodRow := regexp.MustCompile("(?m)^\\| `(\\w+)` \\| (.*?) \\| `?([^|`]*?)`? \\|")
	rows := map[string][2]string{}
	for _, m := range methodRow.FindAllStringSubmatch(string(data), -1) {
		rows[m[1]] = [2]string{m[2], m[3]}
	}
	sigOf := func(cell string) string {
		var s []string
		for _, part := range strings.Split(cell, ",") {
			part = strings.Trim(strings.TrimSpace(part), "`")
			if part == "–" || part == "" {
				continue
			}
			s = append(s, strings.Fields(part)[0])
		}
		return strings.Join(s, "")
	}
	for _, m := range managerIntrospection.Methods {
		row, ok := rows[m.Name]
		if !ok {
			t.Errorf("%s has no table row for %s", apiDoc, m.Name)
			continue
		}
		var in, out string
		for _, a := range m.Args {
			if a.Direction == "in" {
				in += a.Type
			} else {
				out += a.Type
			}
		}
		if sigOf(row[0]) != in || sigOf(row[1]) != out {
			t.Errorf("%s: table says in %q out %q; built in %q out %q", m.Name, sigOf(row[0]), sigOf(row[1]), in, out)
		}
	}
}

// The properties contract's types carry are those the interfaces declare,
// with the declared D-Bus types: what a client reads (contract's Apply)
// and what the objects hold come from one definition.
func TestContractPropertiesMatchInterfaces(t *testing.T) {
	for iface, props := range map[string]map[string]dbus.Variant{
		contract.ManagerInterface: contract.Manager{}.Properties(),
		contract.JobInterface:     contract.Job{}.Properties(),
		contract.PlanInterface:    contract.Plan{}.Properties(),
	} {
		declared := map[string]string{}
		for _, p := range Introspection()[iface].Properties {
			declared[p.Name] = p.Type
		}
		got := map[string]string{}
		for name, v := range props {
			got[name] = v.Signature().String()
		}
		if !reflect.DeepEqual(got, declared) {
			t.Errorf("%s: contract has\n%v\nthe interface declares\n%v", iface, got, declared)
		}
	}
}
