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

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("daemon", "[--config PATH] [--bus system|session|ADDRESS] [--debug]", stdout, stderr)
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
	d, err := daemon.New(ctx, daemon.Options{
		ConfigPath: *path,
		Version:    version,
		Logger:     log,
		Inhibitor:  &api.Inhibitor{Conn: conn, Log: log},
		Serve:      api.Serve(conn, api.NewAuthorizer(conn, log), log),
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
