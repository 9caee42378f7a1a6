package contract

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"
)

// The daemon's well-known name and the manager object, the root of every
// other object's path.
const (
	BusName     = "org.subvault.Subvault1"
	ManagerPath = dbus.ObjectPath("/org/subvault/Subvault1")
)

// Where the job and plan objects are: a job's path is JobPathPrefix and its
// id, a plan's PlanPathPrefix and its escaped name.
const (
	JobPathPrefix  = ManagerPath + "/job/"
	PlanPathPrefix = ManagerPath + "/plan/"
)

// The contract's interfaces, and the standard ones its objects carry.
const (
	ManagerInterface        = "org.subvault.Subvault1.Manager"
	JobInterface            = "org.subvault.Subvault1.Job"
	PlanInterface           = "org.subvault.Subvault1.Plan"
	ObjectManagerInterface  = "org.freedesktop.DBus.ObjectManager"
	PropertiesInterface     = "org.freedesktop.DBus.Properties"
	IntrospectableInterface = "org.freedesktop.DBus.Introspectable"
	PeerInterface           = "org.freedesktop.DBus.Peer"
)

// JobPath is the object path of job id.
func JobPath(id uint32) dbus.ObjectPath {
	return JobPathPrefix + dbus.ObjectPath(strconv.FormatUint(uint64(id), 10))
}

// JobID is the id in a job object's path; false for any other path.
func JobID(p dbus.ObjectPath) (uint32, bool) {
	s, ok := strings.CutPrefix(string(p), string(JobPathPrefix))
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil || strconv.FormatUint(id, 10) != s {
		return 0, false
	}
	return uint32(id), true
}

// PlanPath is the object path of a plan: its name escaped as systemd
// escapes bus path elements ("_" and two lower-case hex digits for every
// byte outside [A-Za-z0-9]).
func PlanPath(name string) dbus.ObjectPath {
	return PlanPathPrefix + dbus.ObjectPath(escapePathElement(name))
}

func escapePathElement(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return b.String()
}
