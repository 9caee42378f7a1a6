package config

import (
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Notify is one entry of settings.notify or of a plan's notify: an
// endpoint told when a job starts and ends (docs/monitoring.md, "Pings
// and webhooks").
//
// URL is a secret: a healthchecks check's UUID or ping key, an ntfy topic
// (whoever knows it reads and writes it), credentials. It is never shown:
// String, LogValue and every message of the configuration name only the
// service and the host.
type Notify struct {
	Service NotifyService
	// URL is an http or https URL, as written.
	URL string
	// Events are the events sent (in NotifyEvents' order); all four when
	// the entry has no events.
	Events []NotifyEvent
	// Kinds are the kinds of job told of (backup, prune, check, copy,
	// restore); a healthchecks entry's default is backup alone, the
	// others' every kind.
	Kinds []string
	// Timeout bounds each attempt to deliver.
	Timeout time.Duration
}

// NotifyService is the kind of endpoint of a notify entry, which says how
// the endpoint is called.
type NotifyService string

// The services a notify entry may name (its one key among them).
const (
	NotifyHealthchecks NotifyService = "healthchecks"
	NotifyNtfy         NotifyService = "ntfy"
	NotifyWebhook      NotifyService = "webhook"
)

// NotifyEvent is an event a notify entry may be sent.
type NotifyEvent string

// The events of notify entries' events key.
const (
	NotifyStart   NotifyEvent = "start"
	NotifySuccess NotifyEvent = "success"
	NotifyFailure NotifyEvent = "failure"
	NotifyStalled NotifyEvent = "stalled"
)

// NotifyEvents are the events an entry may ask for, in order: its
// default.
var NotifyEvents = []NotifyEvent{NotifyStart, NotifySuccess, NotifyFailure, NotifyStalled}

// NotifyKinds are the job kinds a notify entry may be told of.
var NotifyKinds = []string{"backup", "prune", "check", "copy", "restore"}

// Bounds and default of a notify entry's timeout.
const (
	DefaultNotifyTimeout = 10 * time.Second
	MinNotifyTimeout     = time.Second
	MaxNotifyTimeout     = time.Minute
)

// Wants reports whether the entry is sent event about a job of kind.
func (n Notify) Wants(event NotifyEvent, kind string) bool {
	return slices.Contains(n.Events, event) && slices.Contains(n.Kinds, kind)
}

// Host is the URL's host (and port): what may be shown of the entry.
func (n Notify) Host() string {
	u, err := url.Parse(n.URL)
	if err != nil || u.Host == "" {
		return "(no host)"
	}
	return u.Host
}

// String names the entry without its secrets: "healthchecks hc-ping.com".
func (n Notify) String() string { return string(n.Service) + " " + n.Host() }

// LogValue is String, for slog: the URL never reaches a log.
func (n Notify) LogValue() slog.Value { return slog.StringValue(n.String()) }

// GoString is String too, so that %#v shows no secret either.
func (n Notify) GoString() string { return "config.Notify{" + n.String() + "}" }

// Describe is the entry for a person, without its secrets: "healthchecks
// hc-ping.com: start, success, failure, stalled of backup".
func (n Notify) Describe() string {
	return fmt.Sprintf("%s: %s of %s", n, strings.Join(toStrings(n.Events), ", "), strings.Join(n.Kinds, ", "))
}

// NotifyReadable reports whether the file holds notify URLs, which are
// secrets, and others (its group or everyone) may read it, with its mode:
// a warning, not a refusal (docs/configuration.md, "notify").
func (c *Config) NotifyReadable() (fs.FileMode, bool) {
	has := len(c.Settings.Notify) > 0
	for _, p := range c.Plans {
		has = has || len(p.Notify) > 0
	}
	if !has {
		return 0, false
	}
	st, err := os.Stat(c.File)
	if err != nil {
		return 0, false
	}
	return st.Mode().Perm(), st.Mode().Perm()&0o044 != 0
}

// NotifyReadableWarning is what check-config and the daemon say when
// NotifyReadable reports true.
func (c *Config) NotifyReadableWarning(mode fs.FileMode) string {
	return fmt.Sprintf("%s holds notify URLs, which are secrets, and others may read it (mode %04o): chmod 600 %s", c.File, mode, c.File)
}

var (
	notifyKeys     = []string{"healthchecks", "ntfy", "webhook", "events", "kinds", "timeout"}
	notifyServices = []NotifyService{NotifyHealthchecks, NotifyNtfy, NotifyWebhook}
)

const (
	notifyListExpected  = "a list of notify entries, each with one of healthchecks, ntfy or webhook (an http or https URL), such as [{healthchecks: \"https://hc-ping.com/UUID\"}]"
	notifyEntryExpected = "a mapping with exactly one of healthchecks, ntfy or webhook (an http or https URL), and optionally events, kinds and timeout"
)

// notifyList decodes settings.notify or a plan's notify. Its messages
// never quote a URL.
func (p *parser) notifyList(n *yaml.Node, path string) []Notify {
	if p.secretString(n, path, notifyListExpected) {
		return nil
	}
	items, ok := p.list(n, path, notifyListExpected)
	if !ok {
		return nil
	}
	var out []Notify
	seen := map[string]int{}
	for i, item := range items {
		ipath := index(path, i)
		entry, ok := p.notify(item, ipath)
		if !ok {
			continue
		}
		key := string(entry.Service) + " " + entry.URL
		if first, dup := seen[key]; dup {
			p.fail(resolve(item), ipath, fmt.Sprintf("the same %s URL as %s", entry.Service, index(path, first)),
				"each endpoint once per list (one entry can have several events)")
			continue
		}
		seen[key] = i
		out = append(out, entry)
	}
	return out
}

func (p *parser) notify(item *yaml.Node, path string) (Notify, bool) {
	entry := Notify{Timeout: DefaultNotifyTimeout}
	if p.secretString(item, path, notifyEntryExpected) {
		return entry, false
	}
	if n := resolve(item); n.Kind == yaml.MappingNode {
		// "- https://hc-ping.com/UUID:" is a mapping whose key is the URL:
		// refused here, before an "unknown key" message would name it.
		for i := 0; i < len(n.Content); i += 2 {
			if k := resolve(n.Content[i]); k.Kind == yaml.ScalarNode && strings.Contains(k.Value, "://") {
				p.fail(k, path, "a key is a URL (not shown: it is a secret)", notifyEntryExpected+`, such as "- healthchecks: URL"`)
				return entry, false
			}
		}
	}
	m := p.mapping(item, item, path, notifyEntryExpected, notifyKeys)
	if m == nil {
		return entry, false
	}
	var services []pair
	for _, s := range notifyServices {
		if e, _, ok := m.get(string(s)); ok {
			services = append(services, e)
		}
	}
	switch len(services) {
	case 0:
		p.fail(m.at, path, "no endpoint is set", "exactly one of healthchecks, ntfy or webhook (an http or https URL)")
		return entry, false
	case 1:
	default:
		names := make([]string, len(services))
		for i, s := range services {
			names[i] = fmt.Sprintf("%s (line %d)", s.name, s.key.Line)
		}
		p.fail(services[1].key, path, "more than one endpoint is set: "+strings.Join(names, ", "),
			"exactly one of healthchecks, ntfy or webhook per entry (make one entry for each)")
		return entry, false
	}
	service := services[0]
	entry.Service = NotifyService(service.name)
	var good bool
	entry.URL, good = p.notifyURL(service.value, join(path, service.name), entry.Service)

	entry.Events = slices.Clone(NotifyEvents)
	if e, epath, ok := m.get("events"); ok {
		events, ok := p.choices(e.value, epath, "event", toStrings(NotifyEvents))
		good = good && ok
		entry.Events = entry.Events[:0]
		for _, ev := range events {
			entry.Events = append(entry.Events, NotifyEvent(ev))
		}
	}
	entry.Kinds = slices.Clone(NotifyKinds)
	if entry.Service == NotifyHealthchecks {
		// A check is the schedule of one job: a prune's success must not
		// stand for a backup's.
		entry.Kinds = []string{"backup"}
	}
	if e, kpath, ok := m.get("kinds"); ok {
		kinds, ok := p.choices(e.value, kpath, "job kind", NotifyKinds)
		good = good && ok
		entry.Kinds = kinds
	}
	if e, tpath, ok := m.get("timeout"); ok {
		expected := fmt.Sprintf(`a Go duration from %s to %s that bounds each attempt to reach the endpoint, such as "10s" (the default)`,
			MinNotifyTimeout, MaxNotifyTimeout)
		d, ok := p.duration(e.value, tpath, expected)
		switch {
		case !ok:
			good = false
		case d < MinNotifyTimeout || d > MaxNotifyTimeout:
			p.fail(resolve(e.value), tpath, fmt.Sprintf("%s is out of range", d), expected)
			good = false
		default:
			entry.Timeout = d
		}
	}
	return entry, good
}

// notifyURL decodes a notify entry's URL. A URL is a secret: no message
// quotes it, or any part of it.
func (p *parser) notifyURL(n *yaml.Node, path string, service NotifyService) (string, bool) {
	examples := map[NotifyService]string{
		NotifyHealthchecks: "https://hc-ping.com/UUID",
		NotifyNtfy:         "https://ntfy.sh/TOPIC",
		NotifyWebhook:      "https://hooks.example.com/subvault",
	}
	expected := "an http or https URL such as " + examples[service]
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != tagStr {
		// A number or boolean is no URL, and no secret either: shown.
		p.typeError(n, path, expected)
		return "", false
	}
	v := n.Value
	u, err := url.Parse(v)
	switch {
	case strings.TrimSpace(v) == "":
		p.fail(n, path, "is empty", expected)
	case strings.TrimSpace(v) != v || strings.ContainsAny(v, " \t\r\n"):
		p.fail(n, path, "the URL (not shown: it may hold a secret) contains white space", expected)
	case err != nil:
		p.fail(n, path, "the URL (not shown: it may hold a secret) cannot be parsed", expected+", with any special characters of a user name or password %-encoded")
	case u.Scheme != "http" && u.Scheme != "https":
		p.fail(n, path, "the URL (not shown: it may hold a secret) is not http or https", expected)
	case u.Host == "" || u.Hostname() == "":
		p.fail(n, path, "the URL (not shown: it may hold a secret) has no host", expected)
	case u.Opaque != "":
		p.fail(n, path, "the URL (not shown: it may hold a secret) has no // after its scheme", expected)
	case service != NotifyWebhook && strings.Trim(u.Path, "/") == "":
		what := map[NotifyService]string{NotifyHealthchecks: "the check's UUID or ping key and slug", NotifyNtfy: "the topic"}[service]
		p.fail(n, path, "the URL (not shown: it may hold a secret) has no path: it lacks "+what, expected)
	case u.Fragment != "":
		p.fail(n, path, "the URL (not shown: it may hold a secret) has a #fragment, which is never sent", expected)
	default:
		return v, true
	}
	return "", false
}

// secretString refuses a string where a notify list or entry belongs,
// without quoting it: it may well be the URL, a secret. It reports
// whether it refused n.
func (p *parser) secretString(n *yaml.Node, path, expected string) bool {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != tagStr {
		return false
	}
	p.fail(n, path, "got a string (not shown: it may be a URL, which is a secret)", expected)
	return true
}

// choices decodes a non-empty list of distinct strings from allowed.
func (p *parser) choices(n *yaml.Node, path, what string, allowed []string) ([]string, bool) {
	expected := "a non-empty list of " + strings.Join(allowed, ", ")
	items, ok := p.list(n, path, expected)
	if !ok {
		return nil, false
	}
	if len(items) == 0 {
		p.fail(resolve(n), path, "is empty", expected+" (or no entry at all to send nothing)")
		return nil, false
	}
	good := true
	var out []string
	for i, item := range items {
		ipath := index(path, i)
		v, ok := p.str(item, ipath, "a "+what+": one of "+strings.Join(allowed, ", "))
		switch {
		case !ok:
			good = false
		case !slices.Contains(allowed, v):
			p.fail(resolve(item), ipath, fmt.Sprintf("%q is not a %s", v, what), "one of "+strings.Join(allowed, ", "))
			good = false
		case slices.Contains(out, v):
			p.fail(resolve(item), ipath, fmt.Sprintf("%q is listed twice", v), "each "+what+" once")
			good = false
		default:
			out = append(out, v)
		}
	}
	return out, good
}

func toStrings[T ~string](values []T) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = string(v)
	}
	return out
}
