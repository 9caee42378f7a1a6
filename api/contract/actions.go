package contract

// The polkit action ids (packaging/org.subvault.policy), as "Who may call
// what" in docs/dbus-api.md names them.
const (
	// ActionBackup: ListArchives, StartBackup, StartCheck, StartCopy, StartSend, CancelJob of a
	// job the caller alone asked for. Root, the plan's
	// allow_users/allow_groups, or polkit.
	ActionBackup = "org.subvault.backup"
	// ActionManage: StartPrune, DeleteSnapshot, CancelJob of a job others
	// asked for, Reload. Root or polkit.
	ActionManage = "org.subvault.manage"
	// ActionRestore: StartRestore, CloneSnapshot, Diff, DiffTo,
	// GetJobFiles, Rollback. Root or polkit.
	ActionRestore = "org.subvault.restore"
)
