package contract

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// overTheWire encodes body as a signal's body and decodes it again, as a
// client receives it: structs inside variants arrive as []any there, not
// as the server's types.
func overTheWire(t *testing.T, body any) any {
	t.Helper()
	msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldPath:      dbus.MakeVariant(dbus.ObjectPath("/t")),
		dbus.FieldInterface: dbus.MakeVariant("t.T"),
		dbus.FieldMember:    dbus.MakeVariant("T"),
		dbus.FieldSignature: dbus.MakeVariant(dbus.SignatureOf(body)),
	}, Body: []any{body}}
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	back, err := dbus.DecodeMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return back.Body[0]
}

// A plan's Targets (a(sxb)) and a ListTargets entry (a{sv} with Plans
// a(sxuu)) read back, after the wire, as the server gave them: times in
// whole seconds, none as zero.
func TestTargetsOverTheWire(t *testing.T) {
	t.Parallel()
	at := time.Unix(1767225600, 0)
	p := Plan{Name: "home", Subvolumes: []string{}, Targets: []PlanTarget{{Name: "usb", Newest: at, Present: true}, {Name: "disk"}}}
	props := p.Properties()
	if sig := props["Targets"].Signature().String(); sig != "a(sxb)" {
		t.Errorf("Targets is %s, want a(sxb)", sig)
	}
	back, _ := overTheWire(t, props).(map[string]dbus.Variant)
	if got := PlanOf(back); !reflect.DeepEqual(got.Targets, p.Targets) {
		t.Errorf("Targets read back as %+v, want %+v", got.Targets, p.Targets)
	}
	if got := PlanOf(Plan{Name: "x"}.Properties()); got.Targets != nil {
		t.Errorf("a plan without targets read back %+v", got.Targets)
	}

	tg := Target{Name: "disk", UUID: "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", Present: true, Where: "/run/media/disk/subvault",
		Plans: []TargetPlan{{Plan: "home", Newest: at, Copies: 3, Pinned: 2}, {Plan: "root"}}}
	d := tg.Dict()
	want := map[string]string{"Name": "s", "Path": "s", "UUID": "s", "Present": "b", "Where": "s", "Error": "s", "Plans": "a(sxuu)"}
	for k, v := range d {
		if v.Signature().String() != want[k] {
			t.Errorf("%s is %s, want %s", k, v.Signature(), want[k])
		}
	}
	if len(d) != len(want) {
		t.Errorf("%d keys, want %d", len(d), len(want))
	}
	list, _ := overTheWire(t, []map[string]dbus.Variant{d}).([]map[string]dbus.Variant)
	if len(list) != 1 {
		t.Fatalf("the list came back as %v", list)
	}
	if got := TargetOf(list[0]); !reflect.DeepEqual(got, tg) {
		t.Errorf("target read back as\n%+v\nwant\n%+v", got, tg)
	}
	if Seconds(time.Time{}) != 0 || !FromSeconds(0).IsZero() || Seconds(at) != 1767225600 {
		t.Errorf("Seconds/FromSeconds of zero or %v wrong", at)
	}
}
