package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/subvault/subvault/api"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/journal"
)

const daemonAbout = `Runs the backup daemon, what "systemctl start subvault" starts: the plans'
schedules, the job queue, and the D-Bus name org.subvault.Subvault1 on the
bus --bus names. It tells systemd READY, STATUS, WATCHDOG, RELOADING and
STOPPING. SIGHUP re-reads the configuration (an invalid file keeps the one in
force); SIGTERM interrupts running jobs, removes their snapshots and exits.
At start it removes what a killed earlier run left behind: snapshots by name,
stale restic locks of this host.

It logs to the journal (with SUBVAULT_PLAN, SUBVAULT_JOB and a MESSAGE_ID per
event, see journal.md) or, without one, to standard error.

Exit status: 0 stopped cleanly, 1 could not start (the message says why).`

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("daemon", "[--config PATH] [--bus system|session|ADDRESS] [--debug]", daemonAbout, stdout, stderr)
	path := fs.String("config", defaultConfigPath, "configuration `file`")
	bus := fs.String("bus", "system", "the `bus` to serve on: system, session, or a D-Bus address (tests, unprivileged trials)")
	debug := fs.Bool("debug", false, "log debug messages too")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(journal.NewHandler(stderr, journal.WithLevel(level)))

	conn, err := api.Connect(*bus)
	if err != nil {
		fmt.Fprintf(stderr, "subvault daemon: %v\n", err)
		return exitFailure
	}
	defer conn.Close() //nolint:errcheck // the process ends here

	ctx := context.Background()
	authz := api.NewAuthorizer(conn, log)
	defer authz.Close() // the count of refusals not logged yet
	d, err := daemon.New(ctx, daemon.Options{
		ConfigPath: *path,
		Version:    version,
		Logger:     log,
		Inhibitor:  &api.Inhibitor{Conn: conn, Log: log},
		Serve:      api.Serve(conn, authz, log),
	})
	if err != nil {
		fmt.Fprintf(stderr, "subvault daemon: %v\n", err)
		return exitFailure
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "subvault daemon: %v\n", err)
		return exitFailure
	}
	return exitOK
}
