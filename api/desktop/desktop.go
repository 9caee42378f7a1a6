// Package desktop is a client of the desktop notification service
// (org.freedesktop.Notifications, the Desktop Notifications Specification
// 1.2) on a user's session bus: what `subvault notify` shows a failed or
// overdue backup with. It speaks only that published interface.
package desktop

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"
)

// The names of the specification.
const (
	BusName   = "org.freedesktop.Notifications"
	Path      = dbus.ObjectPath("/org/freedesktop/Notifications")
	Interface = "org.freedesktop.Notifications"

	// AppName is the application name every notification of subvault
	// carries (servers group and filter by it).
	AppName = "subvault"
)

// Capabilities a server may list (GetCapabilities) that change what a
// client sends.
const (
	CapActions    = "actions"     // it shows actions and sends ActionInvoked
	CapBodyMarkup = "body-markup" // the body is markup: & and < must be escaped
)

// DefaultAction is the key of the action invoked by clicking the
// notification itself (where the server supports actions).
const DefaultAction = "default"

// Urgency is the "urgency" hint.
type Urgency byte

// The urgency levels of the specification.
const (
	Low      Urgency = 0
	Normal   Urgency = 1
	Critical Urgency = 2 // servers keep it on screen until the user closes it
)

// Action is one button of a notification: Key comes back in ActionInvoked,
// Label is what the user sees.
type Action struct {
	Key   string
	Label string
}

// Notification is what Notify sends. Body is sent as it is: escape it
// with EscapeMarkup when the server has CapBodyMarkup.
type Notification struct {
	Summary    string
	Body       string
	Icon       string // an icon name ("dialog-error") or a file:// URI; "" for none
	Urgency    Urgency
	Actions    []Action // only where the server has CapActions
	ReplacesID uint32   // a notification of ours to replace in place; 0 for a new one
	// Timeout in milliseconds; -1 leaves it to the server, 0 never expires.
	Timeout int32
}

// Client talks to the notification server over one session bus connection.
type Client struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// Dial connects to a session bus: "session" (DBUS_SESSION_BUS_ADDRESS), or
// a D-Bus address. Whether a notification server is there shows at the
// first call.
func Dial(bus string) (*Client, error) {
	var conn *dbus.Conn
	var err error
	if bus == "" || bus == "session" {
		conn, err = dbus.ConnectSessionBus()
	} else {
		conn, err = dbus.Connect(bus)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the session bus (%s): %w", busName(bus), err)
	}
	return New(conn), nil
}

func busName(bus string) string {
	if bus == "" || bus == "session" {
		return "DBUS_SESSION_BUS_ADDRESS"
	}
	return bus
}

// New is a client over a connection the caller owns.
func New(conn *dbus.Conn) *Client {
	return &Client{conn: conn, obj: conn.Object(BusName, Path)}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Capabilities asks the server what it supports (GetCapabilities).
func (c *Client) Capabilities(ctx context.Context) ([]string, error) {
	var caps []string
	if err := c.obj.CallWithContext(ctx, Interface+".GetCapabilities", 0).Store(&caps); err != nil {
		return nil, fmt.Errorf("cannot ask the notification server for its capabilities: %w", err)
	}
	return caps, nil
}

// Has reports whether caps lists capability.
func Has(caps []string, capability string) bool { return slices.Contains(caps, capability) }

// Notify shows n, with AppName, and returns the server's id for it.
func (c *Client) Notify(ctx context.Context, n Notification) (uint32, error) {
	actions := make([]string, 0, 2*len(n.Actions))
	for _, a := range n.Actions {
		actions = append(actions, a.Key, a.Label)
	}
	hints := map[string]dbus.Variant{"urgency": dbus.MakeVariant(byte(n.Urgency))}
	var id uint32
	err := c.obj.CallWithContext(ctx, Interface+".Notify", 0,
		AppName, n.ReplacesID, n.Icon, n.Summary, n.Body, actions, hints, n.Timeout).Store(&id)
	if err != nil {
		return 0, fmt.Errorf("cannot show a notification %q: %w", n.Summary, err)
	}
	return id, nil
}

// CloseNotification takes notification id off the screen.
func (c *Client) CloseNotification(ctx context.Context, id uint32) error {
	if err := c.obj.CallWithContext(ctx, Interface+".CloseNotification", 0, id).Err; err != nil {
		return fmt.Errorf("cannot close notification %d: %w", id, err)
	}
	return nil
}

// EscapeMarkup makes plain text safe in a body the server reads as markup
// (a subset of HTML): &, < and > become entities.
func EscapeMarkup(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// EventType says what a server's signal was.
type EventType int

// The signals of the specification.
const (
	ActionInvoked      EventType = iota + 1 // the user chose an action (Action is its key)
	NotificationClosed                      // the notification left the screen (Reason says why)
)

// Event is one signal from the server about a notification.
type Event struct {
	Type   EventType
	ID     uint32
	Action string // ActionInvoked: the action's key
	Reason uint32 // NotificationClosed: 1 expired, 2 dismissed, 3 CloseNotification, 4 other
}

// Subscribe delivers the server's ActionInvoked and NotificationClosed
// signals, for every notification (the server may broadcast them: keep to
// the ids Notify returned). The channel is closed when ctx ends or the
// connection closes.
func (c *Client) Subscribe(ctx context.Context) (<-chan Event, error) {
	for _, member := range []string{"ActionInvoked", "NotificationClosed"} {
		if err := c.conn.AddMatchSignalContext(ctx, dbus.WithMatchInterface(Interface), dbus.WithMatchMember(member), dbus.WithMatchObjectPath(Path)); err != nil {
			return nil, fmt.Errorf("cannot follow the notification server's signals: %w", err)
		}
	}
	signals := make(chan *dbus.Signal, 64)
	c.conn.Signal(signals)
	events := make(chan Event, 64)
	go func() {
		defer close(events)
		defer c.conn.RemoveSignal(signals)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-signals:
				if !ok {
					return
				}
				e, ok := eventOf(s)
				if !ok {
					continue
				}
				select {
				case events <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return events, nil
}

func eventOf(s *dbus.Signal) (Event, bool) {
	if s.Path != Path || len(s.Body) < 2 {
		return Event{}, false
	}
	id, ok := s.Body[0].(uint32)
	if !ok {
		return Event{}, false
	}
	switch s.Name {
	case Interface + ".ActionInvoked":
		key, ok := s.Body[1].(string)
		return Event{Type: ActionInvoked, ID: id, Action: key}, ok
	case Interface + ".NotificationClosed":
		reason, ok := s.Body[1].(uint32)
		return Event{Type: NotificationClosed, ID: id, Reason: reason}, ok
	}
	return Event{}, false
}
