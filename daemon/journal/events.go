package journal

import "log/slog"

// EventKey is the attribute that names a log call's event. The journal
// handler turns its value into MESSAGE_ID (and keeps it as SUBVAULT_EVENT);
// the text handler prints it like any other attribute.
const EventKey = "event"

// The events subvault logs. Each has a MESSAGE_ID below and a section in
// packaging/subvault.catalog.
const (
	EventJobQueued                = "job-queued"
	EventJobStarted               = "job-started"
	EventJobDone                  = "job-done"
	EventJobFailed                = "job-failed"
	EventJobCanceled              = "job-canceled"
	EventJobPartial               = "job-partial"
	EventJobPostponed             = "job-postponed"
	EventJobRetried               = "job-retried"
	EventJobStalled               = "job-stalled"
	EventJobWaiting               = "job-waiting"
	EventJobMoving                = "job-moving"
	EventJobStallReported         = "job-stall-reported"
	EventJobStallCleared          = "job-stall-cleared"
	EventSnapshotCreated          = "snapshot-created"
	EventSnapshotDeleted          = "snapshot-deleted"
	EventLeftoverSnapshotsRemoved = "leftover-snapshots-removed"
	EventStaleLockRemoved         = "stale-lock-removed"
	EventConfigReloaded           = "config-reloaded"
	EventConfigRefused            = "config-refused"
	EventDaemonStarted            = "daemon-started"
	EventDaemonStopping           = "daemon-stopping"
	EventArchiveForgotten         = "archive-forgotten"
	EventArchiveCopied            = "archive-copied"
	EventRepositoryDamaged        = "repository-damaged"
	EventRestoreLeftoverRemoved   = "restore-leftover-removed"
	EventRollbackDone             = "rollback-done"
	EventRollbackPrepared         = "rollback-prepared"
	EventRollbackFailed           = "rollback-failed"
	EventCallerRefused            = "caller-refused"
	EventRefusalsSuppressed       = "refusals-suppressed"
	EventSendDone                 = "send-done"
	EventSendSkipped              = "send-skipped"
	EventSendFull                 = "send-full"
	EventSendLeftoverRemoved      = "send-leftover-removed"
	EventSendPinDropped           = "send-pin-dropped"
	EventResetDone                = "reset-done"
	EventResetSkipped             = "reset-skipped"
	EventResetFailed              = "reset-failed"
	EventTargetCopyDeleted        = "target-copy-deleted"
)

// events maps each event to its MESSAGE_ID. The ids were made once with
// `systemd-id128 new` and must never change: people filter on them
// (journalctl MESSAGE_ID=...) and the catalog is keyed by them.
var events = []struct{ name, id string }{
	{EventJobQueued, "630761e95a424f1ba2e1798f333189db"},
	{EventJobStarted, "7479f1a0615042eab35af3f5c7d3d8e8"},
	{EventJobDone, "1f1009a00ffb43c2a65430572d13015f"},
	{EventJobFailed, "4272dd3a39e84179a165612825281157"},
	{EventJobCanceled, "8067f9651a38432caec9c0eeed263623"},
	{EventJobPartial, "5e49140950f240ce81db2162bd1ebf4c"},
	{EventJobPostponed, "1a0fbe1364a94c8ca3f070ef7b011331"},
	{EventJobRetried, "2ff3f12b7a6c42d485e47cfc6a818201"},
	{EventJobStalled, "8025eed8479d428884283c72e9613d2b"},
	{EventJobWaiting, "4ee39857c36c4fe9bfab58f0bcf21ee4"},
	{EventJobMoving, "5b1c451154524e5681aa36cb7ff3b264"},
	{EventJobStallReported, "4f1fe013d88340859556042a7467aa69"},
	{EventJobStallCleared, "678ab9e34dd24eaebed03d9ce148c63f"},
	{EventSnapshotCreated, "e92fb8afb96c4c6bb73287fbfdf091a6"},
	{EventSnapshotDeleted, "5c69072e52794c7f8d0696cad0e022c4"},
	{EventLeftoverSnapshotsRemoved, "162f59986e5d4c8cbebffc7d84290bb0"},
	{EventStaleLockRemoved, "bec80594aded48ab961834d65035eaa0"},
	{EventConfigReloaded, "ca87593ae16342c2961e74ba6beab7be"},
	{EventConfigRefused, "f0456a3ddd6249c6aa3c474f2faeee44"},
	{EventDaemonStarted, "adc24c6a73c743d1a73f74fae34ceb53"},
	{EventDaemonStopping, "c8ad7796691049acbd61d789008c08d3"},
	{EventArchiveForgotten, "a7c0082a855141d8b64605a56b45332d"},
	{EventArchiveCopied, "db0f46896216434191a6d4adf6582858"},
	{EventRepositoryDamaged, "b5d0288eee5343f689145d6fdd229b7d"},
	{EventRestoreLeftoverRemoved, "69ccc51d0e004aad9954cfb180c16d28"},
	{EventRollbackDone, "9ab57860309a4c39bf6a13a26158a7ee"},
	{EventRollbackPrepared, "32417a38eebe45fdb37902729387c6a8"},
	{EventRollbackFailed, "24ca48f6c18d44dc8a930043ea84e85c"},
	{EventCallerRefused, "ad44cdc0d2cb4cc093ff7136595e17d2"},
	{EventRefusalsSuppressed, "5227ca89038d43ffabcfd7e809e5f008"},
	{EventSendDone, "8869144b08c2413e90644f0a578bb8c2"},
	{EventSendSkipped, "8a9c785446c74fc98a2ca663cc6a9f3d"},
	{EventSendFull, "e3b469bd1831438cadb09421fa7a06e2"},
	{EventSendLeftoverRemoved, "1de00b35a1634aa29eb7c731c74df970"},
	{EventSendPinDropped, "63b507fddad6446f8ac6bd5fed49b8b6"},
	{EventTargetCopyDeleted, "a4d92fdf23d144448fc809db97a419e3"},
	{EventResetDone, "72f0e0508dc7426d9013f06e4d3c85fc"},
	{EventResetSkipped, "e42b00950608434b84a18f4bcf9b56bf"},
	{EventResetFailed, "b189bda45ad24d468499354ebf6d66a7"},
}

// Event is the attribute that names a log call's event:
//
//	log.Info("backup done", journal.Event(journal.EventJobDone), "job", id)
func Event(name string) slog.Attr { return slog.String(EventKey, name) }

// MessageID returns the MESSAGE_ID of an event (32 lowercase hex digits), and
// false for a name that is not one of the Event constants.
func MessageID(event string) (string, bool) {
	for _, e := range events {
		if e.name == event {
			return e.id, true
		}
	}
	return "", false
}

// Events returns the names of all events, in a fixed order.
func Events() []string {
	names := make([]string, len(events))
	for i, e := range events {
		names[i] = e.name
	}
	return names
}
