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
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
)

// The polkit authority.
const (
	polkitBusName   = "org.freedesktop.PolicyKit1"
	polkitPath      = dbus.ObjectPath("/org/freedesktop/PolicyKit1/Authority")
	polkitInterface = "org.freedesktop.PolicyKit1.Authority"
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

// How many polkit checks may wait at once, of one caller (uid) and in all.
// Each is a reply the bus keeps pending for the daemon, which it allows 128
// of (dbus-daemon's max_replies_per_connection); beyond that every call
// the daemon makes fails. A caller with a few checks waiting gets a prompt
// refusal for more.
const (
	maxChecksPerCaller = 4
	maxChecks          = 64
)

// PolkitAuthorizer is the daemon's Authorizer: root passes; for backups the
// plan's allow_users and allow_groups pass; everyone else is up to polkit.
// When polkit is missing, slow or failing, the answer is no (fail closed).
// A polkit check ends with its caller: it is canceled
// (CancelCheckAuthorization) when the caller leaves the bus or the check
// times out.
type PolkitAuthorizer struct {
	conn     *dbus.Conn
	log      *slog.Logger
	refusals *refusalLog
	callers  *callerWatch

	// Bounds of a polkit check; the tests shorten them.
	timeout, interactiveTimeout time.Duration
	selfUID                     uint32

	// The checks waiting for polkit, by uid and in all, and their bounds.
	checksMu                      sync.Mutex
	checks                        map[uint32]int
	checksAll                     int
	maxChecksPerCaller, maxChecks int
	lastCheck                     atomic.Uint64 // for cancellation ids
	watchFailed                   sync.Once
}

var _ Authorizer = (*PolkitAuthorizer)(nil)

// NewAuthorizer asks the bus behind conn who a caller is, and the polkit
// authority on that bus whether they may act. log gets polkit's refusals
// (Info) and the refusals for want of polkit (Warn), each caller's first
// few in a minute and then their number (Close logs what is not logged
// yet); nil logs nothing.
func NewAuthorizer(conn *dbus.Conn, log *slog.Logger) *PolkitAuthorizer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PolkitAuthorizer{conn: conn, log: log, refusals: newRefusalLog(log), callers: callersOn(conn),
		timeout: PolkitTimeout, interactiveTimeout: PolkitInteractiveTimeout, selfUID: uint32(os.Getuid()),
		checks: map[uint32]int{}, maxChecksPerCaller: maxChecksPerCaller, maxChecks: maxChecks}
}

// Close logs the number of refusals left out of the log so far (the
// daemon is stopping).
func (a *PolkitAuthorizer) Close() { a.refusals.flush() }

// CallerUID asks the bus for the uid of the connection that sent a call.
func (a *PolkitAuthorizer) CallerUID(sender dbus.Sender) (uint32, *dbus.Error) {
	var uid uint32
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	err := a.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&uid)
	if err != nil {
		a.refusals.add(slog.LevelWarn, -1, "cannot identify a caller; refusing", journal.Event(journal.EventCallerRefused),
			"sender", string(sender), "uid", -1, "err", err)
		return 0, denyCaller("cannot identify the caller %s: the bus did not say which user it is (%v)", sender, err)
	}
	return uid, nil
}

// Authorize decides whether sender may do action (contract.ActionBackup,
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
	if action == contract.ActionBackup && plan != nil {
		if a.planAllows(sender, uid, plan) {
			return nil
		}
	}

	refusal := refusal{uid: uid, action: action, what: what, plan: plan}
	who := []any{journal.Event(journal.EventCallerRefused), "sender", string(sender), "uid", uid, "action", action, "plan", planNameOf(plan)}
	answer, err := a.checkPolkit(sender, uid, interactive, action)
	var limit checkLimitError
	switch {
	case errors.As(err, &limit):
		a.refusals.add(slog.LevelWarn, int64(uid), "too many polkit checks waiting; refusing", append(who, "err", err)...)
		return refusal.deny(err.Error())
	case errors.Is(err, errCallerLeft):
		a.refusals.add(slog.LevelInfo, int64(uid), "the caller left before polkit answered; its check was canceled", who...)
		return refusal.deny(err.Error())
	case err != nil:
		a.refusals.add(slog.LevelWarn, int64(uid), "polkit could not be asked; refusing (fail closed)", append(who, "err", err)...)
		return refusal.deny(fmt.Sprintf("%v, so only root%s can be allowed", err, refusal.alternative()))
	}
	if answer.IsAuthorized {
		return nil
	}
	a.refusals.add(slog.LevelInfo, int64(uid), "refused a caller", append(who, "challenge", answer.IsChallenge, "interactive", interactive)...)
	switch {
	case answer.IsChallenge && !interactive:
		return dbus.NewError(contract.ErrorInteractiveAuthorizationRequired, []any{
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
		a.refusals.add(slog.LevelWarn, int64(uid), "cannot learn a caller's groups; allow_groups does not apply to it",
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
// may be reused by the time polkit looks). The check is canceled when the
// caller leaves the bus or it times out: polkit, which may be waiting for
// an authentication agent, answers then, and the bus stops holding its
// reply for the daemon.
func (a *PolkitAuthorizer) checkPolkit(sender dbus.Sender, uid uint32, interactive bool, action string) (polkitResult, error) {
	if err := a.beginCheck(uid); err != nil {
		return polkitResult{}, err
	}
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
	gone, release, err := a.callers.Gone(sender)
	defer release()
	if err != nil {
		a.watchFailed.Do(func() {
			a.log.Warn("polkit checks of callers that leave are canceled only when they time out", "err", err)
		})
	}
	go func() {
		select {
		case <-gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	// Unique on the daemon's connection, as polkit requires.
	id := fmt.Sprintf("subvault-%d", a.lastCheck.Add(1))
	var result polkitResult
	err = a.conn.Object(polkitBusName, polkitPath).CallWithContext(ctx, polkitInterface+".CheckAuthorization", 0,
		subject, action, map[string]string{}, flags, id).Store(&result)
	if err != nil && ctx.Err() != nil {
		// The check counts as waiting until polkit has been told.
		go func() {
			a.cancelCheck(id)
			a.endCheck(uid)
		}()
		select {
		case <-gone:
			return polkitResult{}, errCallerLeft
		default:
			return polkitResult{}, fmt.Errorf("polkit did not answer within %s", timeout)
		}
	}
	a.endCheck(uid)
	if err == nil {
		return result, nil
	}
	var derr dbus.Error
	switch {
	case errors.As(err, &derr) && (derr.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || derr.Name == "org.freedesktop.DBus.Error.NameHasNoOwner"):
		return polkitResult{}, errors.New("polkit is not running on this bus")
	default:
		return polkitResult{}, fmt.Errorf("polkit failed: %w", err)
	}
}

// cancelCheck tells polkit to stop check id.
func (a *PolkitAuthorizer) cancelCheck(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	err := a.conn.Object(polkitBusName, polkitPath).CallWithContext(ctx, polkitInterface+".CancelCheckAuthorization", 0, id).Err
	if err != nil {
		// polkit had answered already, or is gone.
		a.log.Debug("cannot cancel a polkit check", "cancellation_id", id, "err", err)
	}
}

// checkLimitError refuses a check over the bounds.
type checkLimitError struct{ msg string }

func (e checkLimitError) Error() string { return e.msg }

// beginCheck counts a check of uid as waiting, or refuses it when uid or
// everyone together has as many waiting as allowed.
func (a *PolkitAuthorizer) beginCheck(uid uint32) error {
	a.checksMu.Lock()
	defer a.checksMu.Unlock()
	if n := a.checks[uid]; n >= a.maxChecksPerCaller {
		return checkLimitError{fmt.Sprintf("%d authorization checks of yours are already waiting for polkit (at most %d at a time); wait for their answers (or cancel those calls), then call again",
			n, a.maxChecksPerCaller)}
	}
	if a.checksAll >= a.maxChecks {
		return checkLimitError{fmt.Sprintf("%d authorization checks are already waiting for polkit (at most %d at a time); try again in a moment",
			a.checksAll, a.maxChecks)}
	}
	a.checks[uid]++
	a.checksAll++
	return nil
}

func (a *PolkitAuthorizer) endCheck(uid uint32) {
	a.checksMu.Lock()
	defer a.checksMu.Unlock()
	if a.checks[uid]--; a.checks[uid] <= 0 {
		delete(a.checks, uid)
	}
	a.checksAll--
}

// actionWords says what each action lets a caller do, for messages.
var actionWords = map[string]string{
	contract.ActionBackup:  "back up",
	contract.ActionManage:  "manage",
	contract.ActionRestore: "restore from",
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
		if r.action == contract.ActionManage {
			return "manage subvault"
		}
		return r.what + " subvault"
	}
	return r.what + " plan " + r.plan.Name
}

// alternative is who else passes without polkit ("" for actions only root
// and polkit allow).
func (r refusal) alternative() string {
	if r.action == contract.ActionBackup && r.plan != nil {
		return fmt.Sprintf(" and the users and groups in plans.%s.allow_users/allow_groups", r.plan.Name)
	}
	return ""
}

func (r refusal) deny(why string) *dbus.Error {
	fix := fmt.Sprintf("authenticate as an administrator (polkit action %s)", r.action)
	if r.action == contract.ActionBackup && r.plan != nil {
		fix = fmt.Sprintf("add your user to plans.%s.allow_users (or a group of yours to plans.%s.allow_groups), or %s", r.plan.Name, r.plan.Name, fix)
	} else {
		fix = "run as root or " + fix
	}
	msg := fmt.Sprintf("not authorized to %s: you are uid %d; %s", r.object(), r.uid, fix)
	if why != "" {
		msg += "; " + why
	}
	return dbus.NewError(contract.ErrorAccessDenied, []any{msg})
}

func denyCaller(format string, args ...any) *dbus.Error {
	return dbus.NewError(contract.ErrorAccessDenied, []any{fmt.Sprintf(format, args...)})
}

func planNameOf(plan *config.Plan) string {
	if plan == nil {
		return ""
	}
	return plan.Name
}
