// Package scheduler turns each plan's cron specs into runs: next-run times from
// the wall clock, re-checked after suspend, and catch-up of a run missed while
// the machine was off. It only enqueues; it never runs a job itself.
//
// # Firing
//
// The daemon hands the scheduler plain Entry values (plan, kind, a
// cron.Schedule parsed by config.CronParser, the plan's catch_up) with Set,
// at start and on every reload, and runs Run. Each entry's next firing is
// Spec.Next(now) on the wall clock, read in the daemon's local zone
// (WithLocation swaps it in tests). When the clock says a firing is due,
// the scheduler calls EnqueueFunc once, even if the clock jumped over
// several firings (a laptop that slept through three nights runs one
// backup when it wakes, not three), and computes the next firing from
// the time it woke. An EnqueueFunc error (the plan's job still runs)
// skips that firing with a log line; the next one is computed as usual.
//
// Set keeps the next firing of an entry whose spec did not change, so a
// reload does not shift an "@every 6h"; a changed spec is recomputed from
// now, and a removed entry is dropped.
//
// # Catch-up
//
// Like systemd's Persistent=true: when an entry is new to the scheduler
// (every entry of the first Set, and one a reload adds) and has CatchUp,
// and its first firing after the last run the daemon knows of is already
// past, Run enqueues it once with TriggerCatchUp. Without a known last run
// (zero: a plan that never ran) nothing is caught up: there is no evidence
// that a run was missed, and a fresh install should not start a backup the
// moment the daemon starts. A later Set does not catch the same entry up
// again, even while the daemon's last run is still the old one because the
// caught-up job waits in the queue.
//
// # Waiting: a timerfd on the wall clock, no polling
//
// Go timers, like robfig/cron's own runner, count monotonic time, which
// stops while the machine is suspended: a timer set at 23:00 for 03:00 on
// a laptop that sleeps from midnight to 08:00 fires at 11:00. zrepl's
// suspendresumesafetimer fixes this by re-reading the wall clock every ten
// seconds; a daemon that should cost nothing while idle must not wake up
// every ten seconds. RealClock therefore arms a Linux timerfd on
// CLOCK_REALTIME with TFD_TIMER_ABSTIME: the kernel expires it when the
// wall clock reaches the instant, including right after a resume (the
// kernel advances CLOCK_REALTIME by the time slept and fires what is due)
// and after the clock is set forward past it. TFD_TIMER_CANCEL_ON_SET makes
// the read fail with ECANCELED when the clock is set discontinuously before
// the instant; Wait then returns ErrClockChanged and Run recomputes, which
// matters when the clock is set back (a firing earlier than the one computed
// before may now be ahead). CLOCK_BOOTTIME would count suspended time too,
// but it is a duration, blind to the clock being set, so 03:00 would drift
// with every NTP step; the wall clock is what a cron spec talks about.
// Neither CLOCK_REALTIME_ALARM nor CLOCK_BOOTTIME_ALARM is used: a backup
// is not a reason to wake a sleeping laptop.
//
// The timerfd is non-blocking and read through os.File, so the Go netpoller
// (epoll) waits on it: no thread is blocked, and ctx cancellation (Set's
// wake-up, daemon stop) interrupts the read with a past read deadline.
//
// # Daylight saving time
//
// Specs are read in local time, as the configuration says (CRON_TZ is
// refused). A reading that does not exist is skipped by robfig/cron: with
// "30 2 * * *" in Europe/Berlin there is no run on the spring-forward day;
// schedule between 02:00 and 03:00 only if that is acceptable. A reading
// that happens twice (02:30 on the fall-back day) fires once, the first
// time: the scheduler does not fire a cron spec twice at one wall-clock
// reading, which also keeps a clock set back by an hour from repeating a
// run. "@every" durations are real time and are not affected.
package scheduler
