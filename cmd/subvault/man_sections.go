package main

// The parts of the man pages that no --help text and no page of docs/
// holds, in Markdown (go-md2man's: a term on one line and ": " before its
// definition make a .TP entry).

const manDescription = `**subvault** snapshots btrfs subvolumes read-only and backs them up with
**restic**(1) in a private mount namespace in which each snapshot is
mounted over its subvolume's original path. The backup is consistent (it is
read from one instant), restic records the original path and finds its
parent archive, so it reads only the files that changed, and the host never
sees a mount.

The daemon, **subvault-daemon**(8), runs the plans' backups, prunes and
checks on their schedules and serves **org.subvault.Subvault1** on the
system bus; the commands that show or steer plans and jobs talk to it
there. Plans, repositories and schedules are configured in
*/etc/subvault/config.yaml* (see **subvault.yaml**(5)).

Every command prints its usage with **--help** (and **subvault --help**
the list of commands, **subvault --version** the version); this page is
made from the same text. Options take one dash or two (**-config** is
**--config**), and a value after a space or an **=** (**--quiet=false** for
a switch). **--bus**, **--json** and **--config** may also come before the
command they belong to (**subvault --bus session status**).
**subvault completion** prints the completion script of bash, zsh or fish,
which completes plan names, archive ids, snapshot names and job ids from
the daemon.

What the daemon, a repository or the configuration hands on (file names
above all: any user names the files in a backed-up subvolume) is printed so
that it cannot act on the terminal: control characters, DEL and bytes that
are not UTF-8 as **\\x**_NN_, the C1 controls, the bidirectional
embeddings, overrides, isolates and marks and the line and paragraph
separators (U+0080 to U+009F, U+061C, U+200E, U+200F, U+202A to U+202E,
U+2028, U+2029, U+2066 to U+2069) as **\\u**_NNNN_. A backslash
is printed as it is: a name holding the text **\\x1b** looks like one
holding ESC, and neither acts.`

const manJSON = `# JSON OUTPUT

With **--json**, a listing prints one JSON value; times are RFC 3339
strings, absent when there is none; sizes are bytes. Strings hold the values
themselves; the characters a terminal acts on are written as JSON
**\\u**_NNNN_ escapes (control characters, DEL, the C1 controls and the bidirectional
ones), so the output is safe on a terminal too. The fields:

**plans**
: an array of plans: **name**, **subvolumes**, **repository**,
  **schedule**, **next_run**, **last_backup**, **last_result** (**done**,
  **failed**, **canceled**, **stalled** or empty), **last_error**, **last_success** (when
  the last backup that ended **done** finished; absent when none is known),
  **targets** (a plan with **send_to**: each target's **name**, **newest**,
  the time of the plan's newest copy there, absent when none, and
  **present**).

**jobs**, **job**
: an array of jobs, or one: **id**, **kind**, **plan**, **state**
  (**queued**, **running**, **finished**), **result** (**done**,
  **failed**, **canceled**, **postponed**, **stalled**, **skipped**: a
  send to an absent target, not a failure), **send_target** (a send's
  target), **trigger**,
  **triggers** (everyone who asked for the job: the trigger, then each
  caller or schedule given it while it was queued or running), **callers**
  (the uids among them), **progress** (0 to 1), **bytes_done**,
  **bytes_total**, **files_done**, **files_total**, **seconds_remaining**,
  **current_files**, **queued_at**, **started_at**, **finished_at**,
  **error**, **archive_id**, **summary** (restic's summary fields, such as
  **files_new** and **data_added**).

**status**
: an object: **daemon** (**version**, **state**, **plans**,
  **running_jobs**, **queued_jobs**, and **last_reset** with a reset
  section: **time**, **path**, **result** (**done**, **skipped** or
  **failed**), **reason**, **state**; absent when there was none),
  **plans** (the plan fields plus **health**: **ok**, **failed**,
  **overdue** or **never**, and **why**, a sentence), **running** and
  **queued** (jobs), and **healthy** (false when a plan failed or is
  overdue, or the last reset failed).

**snapshots**
: an array of **name**, **path**, **created**, **kept**.

**targets**
: an array of **name**, **path** or **uuid**, **present**, **where** (where
  its copies are in the host's mounts), **error** (why it is absent), and
  **plans**: each plan's **plan**, **newest** (its newest copy there, absent
  when none), **copies** and **pinned**.

**archives**
: an array of **id**, **time**, **hostname**, **paths**, **tags**.

**diff**
: an array of **kind** (**added**, **removed**, **changed**,
  **type-changed**, **metadata**) and **path** (a directory's ends in
  **/**); the metadata ones only with **--metadata**.

**watch**
: one object per line: **event** (**job-new**, **job-changed**,
  **job-finished**, **job-forgotten**, **plan-changed**, **plan-added**,
  **plan-removed**, **daemon-gone**, **daemon-started**), **time**, and the
  **job** or **plan** as above.`

const manExitStatus = `# EXIT STATUS

**0**
: Success.

**1**
: Failure: the command ran and the answer is no (an invalid configuration,
  a failed job); the message says why and what to do.

**2**
: Wrong command line: an unknown command, option or plan.

**3**
: Partial: the archive exists, but some files could not be read; they are
  named.

**4**
: The daemon refused: the caller is not authorized.

**5**
: The daemon is not on the bus.

**130**
: Interrupted by SIGINT or SIGTERM; the job's snapshots were removed.

Each command's own codes are listed under **Exit status** in its
description above.`

const manEnvironment = `# ENVIRONMENT

**NO_COLOR**
: When set and not empty, output on a terminal has no colours (as with
  **TERM=dumb**). Output to a pipe never has.

**DBUS_SYSTEM_BUS_ADDRESS**
: The system bus, where **--bus system** (the default) finds the daemon;
  unset, *unix:path=/run/dbus/system_bus_socket*.

**DBUS_SESSION_BUS_ADDRESS**
: The bus of **--bus session**.`

const manFiles = `# FILES

*/etc/subvault/config.yaml*
: The configuration; see **subvault.yaml**(5).

*/var/lib/subvault*
: State: the job history (*jobs.json*), job ids, plan locks.

*/var/cache/subvault*
: restic's caches, one directory per repository.

*SUBVOLUME*/.subvault-snapshots/
: The plan's local snapshots, named
  **subvault@**_PLAN_**@**_TIME_**@**_JOB_**@**_SUBVOLUME_.

*/usr/share/bash-completion/completions/subvault*, */usr/share/zsh/vendor-completions/_subvault*, */usr/share/fish/vendor_completions.d/subvault.fish*
: The completion scripts (**subvault completion**).`

const manExamples = "# EXAMPLES\n\n" +
	"How the plans stand, and the last jobs of one:\n\n" +
	"```\nsubvault plans\nsubvault jobs --plan home --limit 5\n```\n\n" +
	"Back up the plan *home* now and follow it, then keep watching every job:\n\n" +
	"```\nsubvault backup home\nsubvault watch\n```\n\n" +
	"Restore one directory of the newest archive into a new directory:\n\n" +
	"```\nsubvault restore home latest /root/restored --include /home/alice/Documents\n```\n\n" +
	"Restore the newest archive of home into a new btrfs subvolume, every file\n" +
	"read back; or, as root, over /home itself after a pinned snapshot of it:\n\n" +
	"```\nsubvault restore home latest --subvolume /srv/home.restored --verify\nsubvault restore home latest --in-place\n```\n\n" +
	"Check the configuration after an edit, then have the daemon re-read it:\n\n" +
	"```\nsubvault check-config\nsubvault reload\n```\n\n" +
	"Without the daemon: one backup in the foreground, or a trial daemon with\n" +
	"another configuration on the session bus:\n\n" +
	"```\nsubvault run backup home\nsubvault daemon --config ./config.yaml --bus session\n```\n\n" +
	"Complete plan names and the rest in bash without installing the script:\n\n" +
	"```\nsource <(subvault completion bash)\n```"

const manSeeAlso1 = `# SEE ALSO

**subvault-daemon**(8), **subvault.yaml**(5), **restic**(1), **busctl**(1),
**btrfs-subvolume**(8)`

const manDaemonFiles = `# FILES

*/etc/subvault/config.yaml*
: The configuration; see **subvault.yaml**(5).

*/var/lib/subvault* (**settings.state_dir**)
: The job history (*jobs.json*), job ids, plan locks (*locks/*).

*/var/cache/subvault* (**settings.cache_dir**)
: restic's caches, one directory per repository.`

const manSeeAlso8 = `# SEE ALSO

**subvault**(1), **subvault.yaml**(5), **restic**(1),
**systemd.service**(5), **journalctl**(1), **busctl**(1)`

const manSeeAlso5 = `# SEE ALSO

**subvault**(1), **subvault-daemon**(8), **restic**(1), **crontab**(5)`
