package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon/config"
)

// The polkit authority, and the error names the authorization answers with
// (the bus's own; errors.go names the contract's).
const (
	polkitBusName   = "org.freedesktop.PolicyKit1"
	polkitPath      = dbus.ObjectPath("/org/freedesktop/PolicyKit1/Authority")
	polkitInterface = "org.freedesktop.PolicyKit1.Authority"

	authAccessDenied                     = "org.freedesktop.DBus.Error.AccessDenied"
	authInteractiveAuthorizationRequired = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
)

// polkitAllowUserInteraction is CheckAuthorization's flag
// AllowUserInteraction: polkit may ask the user's authentication agent.
const polkitAllowUserInteraction uint32 = 1

// How long polkit may take. An interactive check waits for a person typing
// a password, bounded by the caller's own D-Bus timeout (25 s by default),
// after which nobody would read the answer anyway.
const (
	PolkitTimeout            = 5 * time.Second
	PolkitInteractiveTimeout = 25 * time.Second
)

// PolkitAuthorizer is the daemon's Authorizer: root passes; for backups the
// plan's allow_users and allow_groups pass; everyone else is up to polkit.
// When polkit is missing, slow or failing, the answer is no (fail closed).
type PolkitAuthorizer struct {
	conn *dbus.Conn
	log  *slog.Logger

	// Bounds of a polkit check; the tests shorten them.
	timeout, interactiveTimeout time.Duration
	selfUID                     uint32
}

var _ Authorizer = (*PolkitAuthorizer)(nil)

// NewAuthorizer asks the bus behind conn who a caller is, and the polkit
// authority on that bus whether they may act. log gets polkit's refusals
// (Info) and the refusals for want of polkit (Warn); nil logs nothing.
func NewAuthorizer(conn *dbus.Conn, log *slog.Logger) *PolkitAuthorizer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PolkitAuthorizer{conn: conn, log: log, timeout: PolkitTimeout, interactiveTimeout: PolkitInteractiveTimeout,
		selfUID: uint32(os.Getuid())}
}

// CallerUID asks the bus for the uid of the connection that sent a call.
func (a *PolkitAuthorizer) CallerUID(sender dbus.Sender) (uint32, *dbus.Error) {
	var uid uint32
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	err := a.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&uid)
	if err != nil {
		a.log.Warn("cannot identify a caller; refusing", "sender", string(sender), "err", err)
		return 0, denyCaller("cannot identify the caller %s: the bus did not say which user it is (%v)", sender, err)
	}
	return uid, nil
}

// Authorize decides whether sender may do action (ActionBackup,
// ActionManage, ActionRestore) on plan (nil when the action is not about
// one plan). interactive is the call's allow-interactive-authorization flag.
func (a *PolkitAuthorizer) Authorize(sender dbus.Sender, interactive bool, action string, plan *config.Plan) *dbus.Error {
	what, ok := actionWords[action]
	if !ok {
		// A programming error in api: never let an unknown action through.
		a.log.Error("authorization asked for an unknown action; refusing", "action", action, "sender", string(sender))
		return denyCaller("not authorized: unknown action %q", action)
	}
	uid, derr := a.CallerUID(sender)
	if derr != nil {
		return derr
	}
	// Root, and the daemon's own user (root, except in trials on a session
	// bus), who could do all this without asking.
	if uid == 0 || uid == a.selfUID {
		return nil
	}
	if action == ActionBackup && plan != nil {
		if a.planAllows(sender, uid, plan) {
			return nil
		}
	}

	refusal := refusal{uid: uid, action: action, what: what, plan: plan}
	answer, err := a.checkPolkit(sender, interactive, action)
	if err != nil {
		a.log.Warn("polkit could not be asked; refusing (fail closed)",
			"sender", string(sender), "uid", uid, "action", action, "plan", planNameOf(plan), "err", err)
		return refusal.deny(fmt.Sprintf("%v, so only root%s can be allowed", err, refusal.alternative()))
	}
	if answer.IsAuthorized {
		return nil
	}
	a.log.Info("refused a caller", "sender", string(sender), "uid", uid, "action", action, "plan", planNameOf(plan),
		"challenge", answer.IsChallenge, "interactive", interactive)
	switch {
	case answer.IsChallenge && !interactive:
		return dbus.NewError(authInteractiveAuthorizationRequired, []any{
			fmt.Sprintf("authentication is needed to %s: call again with interactive authorization allowed, e.g. busctl --allow-interactive-authorization=yes ...", refusal.object()),
		})
	case answer.IsChallenge:
		return refusal.deny("polkit wanted a password but no authentication agent answered (run the client in a desktop session, or start pkttyagent)")
	case answer.Details["polkit.dismissed"] != "":
		return refusal.deny("the authentication was dismissed")
	default:
		return refusal.deny("")
	}
}

// planAllows reports whether the plan's allow_users or allow_groups name
// the caller. Names are resolved now, not when the configuration loaded, so
// a user created later is found; a name that does not resolve allows nobody.
func (a *PolkitAuthorizer) planAllows(sender dbus.Sender, uid uint32, plan *config.Plan) bool {
	for _, u := range plan.AllowUsers {
		id, ok := resolveID(u, func(name string) (string, error) {
			found, err := user.Lookup(name)
			if err != nil {
				return "", err
			}
			return found.Uid, nil
		})
		if !ok {
			a.log.Debug("allow_users names an unknown user", "plan", plan.Name, "user", u)
			continue
		}
		if id == uid {
			return true
		}
	}
	if len(plan.AllowGroups) == 0 {
		return false
	}
	gids, err := a.callerGroups(sender, uid)
	if err != nil {
		a.log.Warn("cannot learn a caller's groups; allow_groups does not apply to it",
			"sender", string(sender), "uid", uid, "plan", plan.Name, "err", err)
		return false
	}
	for _, g := range plan.AllowGroups {
		id, ok := resolveID(g, func(name string) (string, error) {
			found, err := user.LookupGroup(name)
			if err != nil {
				return "", err
			}
			return found.Gid, nil
		})
		if !ok {
			a.log.Debug("allow_groups names an unknown group", "plan", plan.Name, "group", g)
			continue
		}
		if slices.Contains(gids, id) {
			return true
		}
	}
	return false
}

// resolveID turns a numeric id or a name (through lookup) into an id.
func resolveID(nameOrID string, lookup func(string) (string, error)) (uint32, bool) {
	s := nameOrID
	if !allDigits(s) {
		var err error
		if s, err = lookup(nameOrID); err != nil {
			return 0, false
		}
	}
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(id), true
}

func allDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// callerGroups is the caller's gids as the bus saw them when it connected
// (dbus-daemon >= 1.10 reports UnixGroupIDs), else the user's groups from
// the user database.
func (a *PolkitAuthorizer) callerGroups(sender dbus.Sender, uid uint32) ([]uint32, error) {
	var creds map[string]dbus.Variant
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	err := a.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionCredentials", 0, string(sender)).Store(&creds)
	if err == nil {
		if v, ok := creds["UnixGroupIDs"]; ok {
			if gids, ok := v.Value().([]uint32); ok {
				return gids, nil
			}
		}
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, fmt.Errorf("the bus gave no group list and uid %d is not in the user database: %w", uid, err)
	}
	names, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("cannot list the groups of %s: %w", u.Username, err)
	}
	gids := make([]uint32, 0, len(names))
	for _, n := range names {
		if id, err := strconv.ParseUint(n, 10, 32); err == nil {
			gids = append(gids, uint32(id))
		}
	}
	return gids, nil
}

// polkitSubject is polkit's Subject (sa{sv}).
type polkitSubject struct {
	Kind    string
	Details map[string]dbus.Variant
}

// polkitResult is polkit's AuthorizationResult (bba{ss}).
type polkitResult struct {
	IsAuthorized bool
	IsChallenge  bool
	Details      map[string]string
}

// checkPolkit asks polkit about the caller's bus name, never its PID (which
// may be reused by the time polkit looks).
func (a *PolkitAuthorizer) checkPolkit(sender dbus.Sender, interactive bool, action string) (polkitResult, error) {
	subject := polkitSubject{
		Kind:    "system-bus-name",
		Details: map[string]dbus.Variant{"name": dbus.MakeVariant(string(sender))},
	}
	var flags uint32
	timeout := a.timeout
	if interactive {
		flags = polkitAllowUserInteraction
		timeout = a.interactiveTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var result polkitResult
	err := a.conn.Object(polkitBusName, polkitPath).CallWithContext(ctx, polkitInterface+".CheckAuthorization", 0,
		subject, action, map[string]string{}, flags, "").Store(&result)
	if err == nil {
		return result, nil
	}
	var derr dbus.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return polkitResult{}, fmt.Errorf("polkit did not answer within %s", timeout)
	case errors.As(err, &derr) && (derr.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || derr.Name == "org.freedesktop.DBus.Error.NameHasNoOwner"):
		return polkitResult{}, errors.New("polkit is not running on this bus")
	default:
		return polkitResult{}, fmt.Errorf("polkit failed: %w", err)
	}
}

// actionWords says what each action lets a caller do, for messages.
var actionWords = map[string]string{
	ActionBackup:  "back up",
	ActionManage:  "manage",
	ActionRestore: "restore from",
}

// refusal builds the AccessDenied message: what was refused, who asked,
// and how to get it.
type refusal struct {
	uid    uint32
	action string
	what   string
	plan   *config.Plan
}

func (r refusal) object() string {
	if r.plan == nil {
		if r.action == ActionManage {
			return "manage subvault"
		}
		return r.what + " subvault"
	}
	return r.what + " plan " + r.plan.Name
}

// alternative is who else passes without polkit ("" for actions only root
// and polkit allow).
func (r refusal) alternative() string {
	if r.action == ActionBackup && r.plan != nil {
		return fmt.Sprintf(" and the users and groups in plans.%s.allow_users/allow_groups", r.plan.Name)
	}
	return ""
}

func (r refusal) deny(why string) *dbus.Error {
	fix := fmt.Sprintf("authenticate as an administrator (polkit action %s)", r.action)
	if r.action == ActionBackup && r.plan != nil {
		fix = fmt.Sprintf("add your user to plans.%s.allow_users (or a group of yours to plans.%s.allow_groups), or %s", r.plan.Name, r.plan.Name, fix)
	} else {
		fix = "run as root or " + fix
	}
	msg := fmt.Sprintf("not authorized to %s: you are uid %d; %s", r.object(), r.uid, fix)
	if why != "" {
		msg += "; " + why
	}
	return dbus.NewError(authAccessDenied, []any{msg})
}

func denyCaller(format string, args ...any) *dbus.Error {
	return dbus.NewError(authAccessDenied, []any{fmt.Sprintf(format, args...)})
}

func planNameOf(plan *config.Plan) string {
	if plan == nil {
		return ""
	}
	return plan.Name
}
