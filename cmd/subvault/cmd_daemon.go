package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/godbus/dbus/v5"
	"github.com/spf13/cobra"

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

It follows UPower, NetworkManager and systemd-networkd on the system bus,
where they are: a plan's on_battery and metered hold its scheduled jobs
back, and a scheduled job that found its repository unreachable is
retried when the network comes back (laptops.md).

It logs to the journal (with SUBVAULT_PLAN, SUBVAULT_JOB and a MESSAGE_ID per
event, see journal.md) or, without one, to standard error.

A daemon that loses its bus connection (dbus-daemon stopped, or dropped it)
can serve nobody: it logs why, stops as on SIGTERM and exits 1, so that
systemd starts it again.

Exit status: 0 stopped cleanly, 1 could not start, or lost its bus (the
message says why).`

type daemonOptions struct {
	config, bus string
	debug       bool
}

func newDaemonCommand() *cobra.Command {
	var opts daemonOptions
	cmd := &cobra.Command{
		Use:               "daemon [--config PATH] [--bus system|session|ADDRESS] [--debug]",
		Short:             "run the backup daemon (what systemd starts)",
		Long:              daemonAbout,
		GroupID:           groupAdmin,
		Args:              atMost(0),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              runs(func(cmd *cobra.Command, _ []string) int { return runDaemon(cmd.ErrOrStderr(), opts) }),
	}
	configFlag(cmd, &opts.config, "configuration `file`")
	cmd.Flags().StringVar(&opts.bus, "bus", "system", "the `bus` to serve on: system, session, or a D-Bus address (tests, unprivileged trials)")
	completeBus(cmd)
	cmd.Flags().BoolVar(&opts.debug, "debug", false, "log debug messages too")
	return cmd
}

func runDaemon(stderr io.Writer, opts daemonOptions) int {
	level := slog.LevelInfo
	if opts.debug {
		level = slog.LevelDebug
	}
	log := slog.New(journal.NewHandler(stderr, journal.WithLevel(level)))

	conn, err := api.ConnectServer(opts.bus)
	if err != nil {
		fmt.Fprintf(stderr, "subvault daemon: %s\n", printableText(err.Error()))
		return exitFailure
	}
	defer conn.Close() //nolint:errcheck // the process ends here

	// Off the bus the daemon serves nobody, and godbus does not reconnect:
	// it stops (running jobs interrupted and cleaned up, as on SIGTERM),
	// says why, and exits 1 so that systemd (Restart=on-failure) starts a
	// new one on the bus.
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	go func() {
		select {
		case <-conn.Context().Done():
			stop(fmt.Errorf("lost its connection to the bus (%s): dbus-daemon stopped or dropped the connection; exiting so that systemd starts it again", opts.bus))
		case <-ctx.Done():
		}
	}()
	authz := api.NewAuthorizer(conn, log)
	defer authz.Close() // the count of refusals not logged yet
	d, err := daemon.New(ctx, daemon.Options{
		ConfigPath: opts.config,
		Version:    version,
		Logger:     log,
		Inhibitor:  &api.Inhibitor{Conn: conn, Log: log},
		Conditions: watchConditions(ctx, opts.bus, conn, log),
		Serve:      api.Serve(conn, authz, log),
	})
	if err != nil {
		fmt.Fprintf(stderr, "subvault daemon: %s\n", printableText(err.Error()))
		return exitFailure
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "subvault daemon: %s\n", printableText(err.Error()))
		return exitFailure
	}
	return exitOK
}

// watchConditions follows the battery, a metered connection and the
// network (the plans' on_battery and metered, the retries of a job
// postponed for the network) on the system bus: the daemon's own
// connection when it serves there, else a connection of its own
// ($DBUS_SYSTEM_BUS_ADDRESS, or the system bus's socket). Without a system
// bus the daemon runs without them: nothing holds a job back, and a
// postponed job is retried on its timer only.
func watchConditions(ctx context.Context, bus string, conn *dbus.Conn, log *slog.Logger) daemon.Conditions {
	if bus != "" && bus != "system" {
		system, err := api.ConnectServer("system")
		if err != nil {
			log.Warn("no system bus: on_battery and metered hold back no job, and a job postponed for the network is retried on its timer only", "err", err)
			return nil
		}
		go func() { <-ctx.Done(); system.Close() }() //nolint:errcheck,gosec // the daemon is stopping
		conn = system
	}
	c, err := api.WatchConditions(ctx, conn, log)
	if err != nil {
		log.Warn("on_battery and metered hold back no job, and a job postponed for the network is retried on its timer only", "err", err)
		return nil
	}
	return c
}
