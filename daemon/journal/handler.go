// Package journal is subvault's log handler. Under systemd, with stderr
// connected to the journal, it sends native journal entries: the message,
// a PRIORITY from the level, a MESSAGE_ID from the event, and every
// attribute as a SUBVAULT_* field that journalctl can filter on. Anywhere
// else it prints plain slog text.
//
// Either way it never prints the value of an attribute whose name says it
// holds a secret (password, secret, token, env).
package journal

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
)

// Identifier is the SYSLOG_IDENTIFIER of every entry.
const Identifier = "subvault"

// Redacted replaces the value of an attribute that may hold a secret.
const Redacted = "[redacted]"

// Option changes how a handler is made.
type Option func(*options)

type options struct {
	level slog.Leveler
}

// WithLevel sets the lowest level that is logged; the default is Info.
func WithLevel(l slog.Leveler) Option { return func(o *options) { o.level = l } }

func makeOptions(opts []Option) options {
	o := options{level: slog.LevelInfo}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Seams for tests: whether stderr is the journal, and where journald listens.
var (
	stderrIsJournal = stderrIsJournalStream
	journalSocket   = DefaultSocket
)

// stderrIsJournalStream reports whether stderr is connected to journald, as
// systemd sets it up for a service with StandardError=journal
// ($JOURNAL_STREAM names that stream's device and inode). A JOURNAL_STREAM
// that cannot be read counts as no journal: the text still reaches it.
func stderrIsJournalStream() bool {
	ok, err := sdjournal.StderrIsJournalStream()
	return ok && err == nil
}

// NewHandler returns the handler the daemon logs through: native journal
// entries when stderr is the journal and journald answers on its socket,
// slog text on w otherwise (a terminal, a test, or a journald that is gone,
// in which case the text still reaches the journal through stderr).
func NewHandler(w io.Writer, opts ...Option) slog.Handler {
	if stderrIsJournal() {
		if h, err := NewJournalHandler(journalSocket, opts...); err == nil {
			return h
		}
	}
	return NewTextHandler(w, opts...)
}

// NewTextHandler returns a slog.TextHandler on w that redacts secrets.
func NewTextHandler(w io.Writer, opts ...Option) slog.Handler {
	o := makeOptions(opts)
	return slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: o.level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if isSecret(a.Key) || slices.ContainsFunc(groups, isSecret) {
				a.Value = slog.StringValue(Redacted)
			}
			return a
		},
	})
}

// NewJournalHandler returns a handler that sends native journal entries to
// the journald socket at path (DefaultSocket, or a test's own socket). It
// fails when nothing listens there.
func NewJournalHandler(path string, opts ...Option) (slog.Handler, error) {
	s, err := newSender(path)
	if err != nil {
		return nil, err
	}
	return &journalHandler{sender: s, level: makeOptions(opts).level}, nil
}

type journalHandler struct {
	sender *sender
	level  slog.Leveler
	// groups are the groups opened by WithGroup: the field name prefix of
	// the attributes that follow.
	groups []string
	// fields are the attributes added by WithAttrs, already converted.
	fields []field
	// event and errText come from WithAttrs; a record's own override them.
	event   string
	errText string
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.fields = slices.Clip(h.fields)
	for _, a := range attrs {
		h2.fields = h2.appendAttr(h2.fields, &h2.event, &h2.errText, h.groups, a)
	}
	return &h2
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(slices.Clip(h.groups), name)
	return &h2
}

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	event, errText := h.event, h.errText
	var attrs []field
	r.Attrs(func(a slog.Attr) bool {
		attrs = h.appendAttr(attrs, &event, &errText, h.groups, a)
		return true
	})

	message := r.Message
	if errText != "" {
		message += ": " + errText
	}
	fields := make([]field, 0, 8+len(h.fields)+len(attrs))
	fields = append(fields,
		field{"MESSAGE", message},
		field{"PRIORITY", priority(r.Level)},
		field{"SYSLOG_IDENTIFIER", Identifier},
	)
	if id, ok := MessageID(event); ok {
		fields = append(fields, field{"MESSAGE_ID", id})
	}
	if r.PC != 0 {
		frame, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		fields = append(fields,
			field{"CODE_FILE", frame.File},
			field{"CODE_LINE", strconv.Itoa(frame.Line)},
			field{"CODE_FUNC", frame.Function},
		)
	}
	fields = append(fields, h.fields...)
	fields = append(fields, attrs...)
	return h.sender.send(encode(fields))
}

// appendAttr appends a as fields named SUBVAULT_<GROUPS>_<KEY>, groups
// flattened. At the top level (no group open) it also picks up the event
// name and the error text, which go into MESSAGE_ID and MESSAGE.
func (h *journalHandler) appendAttr(fields []field, event, errText *string, groups []string, a slog.Attr) []field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fields
	}
	if isSecret(a.Key) || slices.ContainsFunc(groups, isSecret) {
		return append(fields, field{fieldName(groups, a.Key), Redacted})
	}
	if a.Value.Kind() == slog.KindGroup {
		inner := groups
		if a.Key != "" {
			inner = append(slices.Clip(groups), a.Key)
		}
		for _, ga := range a.Value.Group() {
			fields = h.appendAttr(fields, event, errText, inner, ga)
		}
		return fields
	}
	value := valueString(a.Value)
	if len(groups) == 0 {
		switch a.Key {
		case EventKey:
			*event = value
		case "err", "error":
			if a.Value.Kind() != slog.KindAny || a.Value.Any() != nil {
				*errText = value
			}
		}
	}
	return append(fields, field{fieldName(groups, a.Key), value})
}

func valueString(v slog.Value) string {
	if v.Kind() == slog.KindTime {
		return v.Time().Format(time.RFC3339Nano)
	}
	return v.String()
}

// priority maps a level to a syslog priority; levels between the named ones
// take the priority of the named one below them.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "3" // err
	case l >= slog.LevelWarn:
		return "4" // warning
	case l >= slog.LevelInfo:
		return "6" // info
	default:
		return "7" // debug
	}
}

// maxFieldName is journald's limit on the length of a field name.
const maxFieldName = 64

// fieldName makes a journal field name of a (grouped) attribute key:
// SUBVAULT_ and the groups and key in upper snake case, so snapshot_job
// becomes SUBVAULT_SNAPSHOT_JOB, restic.filesNew SUBVAULT_RESTIC_FILES_NEW.
// journald accepts only A-Z, 0-9 and _, and no leading _ (those fields are
// its own); the prefix sees to the latter.
func fieldName(groups []string, key string) string {
	var b strings.Builder
	b.WriteString("SUBVAULT")
	for _, part := range append(slices.Clip(groups), key) {
		b.WriteByte('_')
		prevLower := false
		for _, r := range part {
			switch {
			case r >= 'a' && r <= 'z':
				b.WriteRune(unicode.ToUpper(r))
				prevLower = true
			case r >= 'A' && r <= 'Z':
				if prevLower {
					b.WriteByte('_')
				}
				b.WriteRune(r)
				prevLower = false
			case r >= '0' && r <= '9':
				b.WriteRune(r)
				prevLower = true
			default:
				b.WriteByte('_')
				prevLower = false
			}
		}
	}
	name := b.String()
	for strings.Contains(name, "__") {
		name = strings.ReplaceAll(name, "__", "_")
	}
	name = strings.TrimRight(name, "_")
	if name == "SUBVAULT" {
		name = "SUBVAULT_FIELD"
	}
	if len(name) > maxFieldName {
		name = strings.TrimRight(name[:maxFieldName], "_")
	}
	return name
}

// isSecret reports whether an attribute key (or group name) says its value
// may hold a secret. The code keeps secrets out of logs in the first place;
// this is the second line.
func isSecret(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{"password", "passwd", "secret", "token", "credential"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	for word := range strings.FieldsFuncSeq(k, func(r rune) bool { return r < 'a' || r > 'z' }) {
		if word == "env" || strings.HasPrefix(word, "environ") {
			return true
		}
	}
	return false
}
