package api

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon"
)

// The services on the system bus that say what the daemon's conditions
// need (daemon.Conditions): UPower for the battery, NetworkManager for a
// metered connection and the network, systemd-networkd for the network
// where NetworkManager is not running.
const (
	upowerName       = "org.freedesktop.UPower"
	upowerPath       = "/org/freedesktop/UPower"
	upowerInterface  = "org.freedesktop.UPower"
	nmName           = "org.freedesktop.NetworkManager"
	nmPath           = "/org/freedesktop/NetworkManager"
	nmInterface      = "org.freedesktop.NetworkManager"
	networkdName     = "org.freedesktop.network1"
	networkdPath     = "/org/freedesktop/network1"
	networkdIface    = "org.freedesktop.network1.Manager"
	propertiesIface  = "org.freedesktop.DBus.Properties"
	conditionsCallTO = 5 * time.Second
)

// Conditions follows the battery, a metered connection and the network on
// the system bus, for the daemon (daemon.Options.Conditions). It reads the
// services' properties at start and again whenever one of them says a
// property changed (PropertiesChanged) or comes or goes on the bus
// (NameOwnerChanged); it never polls. A service that is not on the bus
// counts as "nothing known": not on battery, not metered, the network
// unknown.
//
// A signal only makes it read the properties again, from the services'
// well-known names (which only root may own on the system bus), so a
// signal another user sends the daemon changes nothing it believes;
// re-reads are coalesced, so a flood of them costs one read at a time.
type Conditions struct {
	conn *dbus.Conn
	log  *slog.Logger

	mu      sync.Mutex
	state   daemon.ConditionState
	sources string
	fns     []func()

	dirty chan struct{}
}

var _ daemon.Conditions = (*Conditions)(nil)

// WatchConditions reads the conditions from conn (the system bus) and
// follows them until ctx ends or conn closes.
func WatchConditions(ctx context.Context, conn *dbus.Conn, log *slog.Logger) (*Conditions, error) {
	c := &Conditions{conn: conn, log: log, dirty: make(chan struct{}, 1)}
	signals := make(chan *dbus.Signal, 64)
	conn.Signal(signals)
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender(upowerName), dbus.WithMatchObjectPath(upowerPath), dbus.WithMatchInterface(propertiesIface), dbus.WithMatchMember("PropertiesChanged")},
		{dbus.WithMatchSender(nmName), dbus.WithMatchObjectPath(nmPath), dbus.WithMatchInterface(propertiesIface), dbus.WithMatchMember("PropertiesChanged")},
		// NetworkManager before 1.0 and the mock of python-dbusmock
		// send their own PropertiesChanged and StateChanged.
		{dbus.WithMatchSender(nmName), dbus.WithMatchObjectPath(nmPath), dbus.WithMatchInterface(nmInterface)},
		{dbus.WithMatchSender(networkdName), dbus.WithMatchObjectPath(networkdPath), dbus.WithMatchInterface(propertiesIface), dbus.WithMatchMember("PropertiesChanged")},
	}
	for _, name := range []string{upowerName, nmName, networkdName} {
		rules = append(rules, []dbus.MatchOption{
			dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, name),
		})
	}
	for _, r := range rules {
		if err := conn.AddMatchSignalContext(ctx, r...); err != nil {
			conn.RemoveSignal(signals)
			return nil, fmt.Errorf("cannot follow the battery and the network on the system bus: %w", err)
		}
	}
	c.refresh(ctx)
	c.mu.Lock()
	c.log.Info("following the battery and the network", "sources", c.sources, "on_battery", c.state.OnBattery,
		"metered", c.state.Metered, "network", c.state.Network.String())
	c.mu.Unlock()

	go func() {
		defer conn.RemoveSignal(signals)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-signals:
				if !ok {
					return
				}
				if relevant(s) {
					select {
					case c.dirty <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-conn.Context().Done():
				return
			case <-c.dirty:
				c.refresh(ctx)
			}
		}
	}()
	return c, nil
}

// relevant says whether s is one of the signals the match rules ask for
// (the connection carries every other signal of the daemon too).
func relevant(s *dbus.Signal) bool {
	switch s.Path {
	case upowerPath, nmPath, networkdPath:
		return s.Name == propertiesIface+".PropertiesChanged" || s.Name == nmInterface+".PropertiesChanged" || s.Name == nmInterface+".StateChanged"
	case "/org/freedesktop/DBus":
		if s.Name != "org.freedesktop.DBus.NameOwnerChanged" || len(s.Body) < 1 {
			return false
		}
		name, _ := s.Body[0].(string)
		return name == upowerName || name == nmName || name == networkdName
	}
	return false
}

// State is the conditions as last read.
func (c *Conditions) State() daemon.ConditionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// OnChange registers fn, called after every read that changed State.
func (c *Conditions) OnChange(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, fn)
}

// refresh reads every service's properties again and tells the listeners
// when the state changed.
func (c *Conditions) refresh(ctx context.Context) {
	var st daemon.ConditionState
	var sources []string
	if props, ok := c.properties(ctx, upowerName, upowerPath, upowerInterface); ok {
		sources = append(sources, "UPower")
		st.OnBattery, _ = props["OnBattery"].Value().(bool)
	}
	if props, ok := c.properties(ctx, nmName, nmPath, nmInterface); ok {
		sources = append(sources, "NetworkManager")
		metered, _ := props["Metered"].Value().(uint32)
		st.Metered = Metered(metered)
		state, _ := props["State"].Value().(uint32)
		connectivity, _ := props["Connectivity"].Value().(uint32)
		st.Network = NetworkManagerNetwork(state, connectivity)
	} else if props, ok := c.properties(ctx, networkdName, networkdPath, networkdIface); ok {
		sources = append(sources, "systemd-networkd")
		online, _ := props["OnlineState"].Value().(string)
		operational, _ := props["OperationalState"].Value().(string)
		st.Network = NetworkdNetwork(online, operational)
	}
	c.mu.Lock()
	changed := st != c.state
	c.state, c.sources = st, fmt.Sprint(sources)
	fns := slices.Clone(c.fns)
	c.mu.Unlock()
	if !changed {
		return
	}
	c.log.Debug("conditions changed", "on_battery", st.OnBattery, "metered", st.Metered, "network", st.Network.String())
	for _, fn := range fns {
		fn()
	}
}

// properties are the properties of iface on name's object path, and
// false when name is not on the bus (or does not answer in time).
func (c *Conditions) properties(ctx context.Context, name string, path dbus.ObjectPath, iface string) (map[string]dbus.Variant, bool) {
	var has bool
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err != nil || !has {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, conditionsCallTO)
	defer cancel()
	var props map[string]dbus.Variant
	if err := c.conn.Object(name, path).CallWithContext(ctx, propertiesIface+".GetAll", 0, iface).Store(&props); err != nil {
		c.log.Warn("cannot read the properties of "+name+"; taken as not on the bus", "err", err)
		return nil, false
	}
	return props, true
}

// Metered says whether NetworkManager's Metered (NMMetered) counts as a
// metered connection: yes (1) and guess-yes (3) do; unknown (0), no (2)
// and guess-no (4) do not.
func Metered(v uint32) bool { return v == 1 || v == 3 }

// NetworkManagerNetwork is the network as NetworkManager's State
// (NMState) and Connectivity (NMConnectivityState) say it, the worse of
// the two where both are known. State: asleep (10), disconnected (20),
// disconnecting (30) and connecting (40) are offline; connected-local (50)
// and connected-site (60) local; connected-global (70) online.
// Connectivity: none (1) is offline; portal (2) and limited (3) local;
// full (4) online. Unknown (0) says nothing.
func NetworkManagerNetwork(state, connectivity uint32) daemon.NetworkState {
	fromState := daemon.NetworkUnknown
	switch {
	case state >= 70:
		fromState = daemon.NetworkOnline
	case state >= 50:
		fromState = daemon.NetworkLocal
	case state >= 10:
		fromState = daemon.NetworkOffline
	}
	fromConnectivity := daemon.NetworkUnknown
	switch connectivity {
	case 1:
		fromConnectivity = daemon.NetworkOffline
	case 2, 3:
		fromConnectivity = daemon.NetworkLocal
	case 4:
		fromConnectivity = daemon.NetworkOnline
	}
	switch {
	case fromState == daemon.NetworkUnknown:
		return fromConnectivity
	case fromConnectivity == daemon.NetworkUnknown:
		return fromState
	}
	return min(fromState, fromConnectivity)
}

// NetworkdNetwork is the network as systemd-networkd's OnlineState
// (offline, partial, online) says it, or, from a networkd without it, its
// OperationalState: routable is online; degraded, carrier,
// degraded-carrier and enslaved are local; off, no-carrier and dormant
// offline.
func NetworkdNetwork(online, operational string) daemon.NetworkState {
	switch online {
	case "offline":
		return daemon.NetworkOffline
	case "partial":
		return daemon.NetworkLocal
	case "online":
		return daemon.NetworkOnline
	}
	switch operational {
	case "routable":
		return daemon.NetworkOnline
	case "degraded", "carrier", "degraded-carrier", "enslaved":
		return daemon.NetworkLocal
	case "off", "no-carrier", "dormant":
		return daemon.NetworkOffline
	}
	return daemon.NetworkUnknown
}
