package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/reset"
)

// newResetCommand is "reset init|run|diff": the impermanence of
// docs/configuration.md#reset, run in-process as root, without the daemon.
func newResetCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "reset {init PATH | run [--cmdline FILE] | diff PATH [--json]}",
		Short:   "reset subvolumes at boot: take the clean snapshot, run the reset, see what it throws away",
		Long:    resetAbout,
		GroupID: groupAdmin,
		Args:    cobra.ArbitraryArgs,
		RunE:    subcommandsOnly("subvault reset: unknown command %q (init, run or diff)"),
	}
	cmd.AddCommand(newResetInitCommand(), newResetRunCommand(), newResetDiffCommand())
	return cmd
}

const resetAbout = `Resets subvolumes at every boot (docs/configuration.md, reset): each
subvolume of the reset section goes back to its clean snapshot, with the
persisted paths copied over from the state it leaves, which is kept as a
read-only snapshot (subvault snapshots reset lists them).

init PATH takes the clean snapshot of the subvolume mounted at PATH, as it is
now: set up the system first. run is what the initrd runs before the root is
mounted. diff PATH lists what the next reset of PATH throws away: every path
that differs from the clean snapshot and is not persisted, with its size;
persist what you need of it (--json: an array of {path, kind, type, size}).
Each runs as root, in-process, without the daemon; --config names the
configuration file.

run reads the kernel command line (root=, rootflags=subvol=, resume=;
subvault.reset=0 skips the reset for one boot) from /proc/cmdline, or from
FILE with --cmdline, prints one line per subvolume, and, reading
/proc/cmdline or in an initrd, the same to the kernel log (journalctl -k). Exit status of
run: 0 done or skipped, 1 a subvolume failed (it stays as it was and boots),
2 wrong command line.`

func newResetInitCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "init PATH [--config FILE]",
		Short: "take the clean snapshot a reset returns to",
		Long:  resetAbout,
		Args:  atMost(1),
		RunE: runs(func(cmd *cobra.Command, args []string) int {
			if len(args) != 1 {
				fmt.Fprintln(cmd.ErrOrStderr(), "subvault reset init: which subvolume? (a path of the reset section)")
				return exitUsage
			}
			cfg, code := loadResetConfig(cmd.ErrOrStderr(), path)
			if cfg == nil {
				return code
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			snap, err := reset.Init(cmd.Context(), cfg, args[0], log)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "subvault reset init: %s\n", printableText(err.Error()))
				return exitFailure
			}
			fmt.Fprintf(cmd.OutOrStdout(), "clean snapshot of %s: %s\n", printable(args[0]), printable(snap.Name()))
			return exitOK
		}),
	}
	configFlag(cmd, &path, "configuration `file`")
	return cmd
}

func newResetRunCommand() *cobra.Command {
	var path, cmdline string
	cmd := &cobra.Command{
		Use:   "run [--cmdline FILE] [--config FILE]",
		Short: "reset the configured subvolumes (for the initrd, before the root is mounted)",
		Long:  resetAbout,
		Args:  atMost(0),
		RunE: runs(func(cmd *cobra.Command, args []string) int {
			return runReset(cmd.OutOrStdout(), cmd.ErrOrStderr(), path, cmdline)
		}),
	}
	configFlag(cmd, &path, "configuration `file`")
	cmd.Flags().StringVar(&cmdline, "cmdline", "", "read the kernel command line from `FILE` instead of /proc/cmdline")
	return cmd
}

func runReset(stdout, stderr io.Writer, path, cmdlineFile string) int {
	cfg, code := loadResetConfig(stderr, path)
	if cfg == nil {
		return code
	}
	file := cmdlineFile
	if file == "" {
		file = "/proc/cmdline"
	}
	cmdline, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "subvault reset run: %s\n", printableText(err.Error()))
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rec, err := reset.Run(ctx, cfg, reset.RunOptions{Cmdline: string(cmdline), Log: log})
	var lines []string
	for _, r := range rec.Results {
		line := fmt.Sprintf("subvault reset: %s: %s", r.Path, r.Result)
		switch {
		case r.Result == reset.ResultDone:
			line += fmt.Sprintf(" (previous state %s, %d persisted, %s)", r.State, r.Persisted, humanBytes(uint64(max(r.Bytes, 0))))
		case r.Reason != "":
			line += ": " + r.Reason
		}
		lines = append(lines, printableText(line))
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	if cmdlineFile == "" || inInitrd() {
		// In the initrd the console may be gone by the time anyone looks:
		// the kernel log keeps it (journalctl -k).
		if k, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
			for _, l := range lines {
				fmt.Fprintln(k, l)
			}
			k.Close() //nolint:errcheck,gosec // best effort
		}
	}
	if err != nil {
		return exitFailure
	}
	return exitOK
}

// inInitrd says whether this runs in an initrd: systemd's and dracut's
// have /etc/initrd-release, initramfs-tools' its /scripts directory.
func inInitrd() bool {
	for _, p := range []string{"/etc/initrd-release", "/scripts/local-premount"} {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return false
}

func newResetDiffCommand() *cobra.Command {
	var path string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff PATH [--json] [--config FILE]",
		Short: "list what the next reset of PATH throws away",
		Long:  resetAbout,
		Args:  atMost(1),
		RunE: runs(func(cmd *cobra.Command, args []string) int {
			if len(args) != 1 {
				fmt.Fprintln(cmd.ErrOrStderr(), "subvault reset diff: which subvolume? (a path of the reset section)")
				return exitUsage
			}
			cfg, code := loadResetConfig(cmd.ErrOrStderr(), path)
			if cfg == nil {
				return code
			}
			changes, err := reset.Diff(cmd.Context(), cfg, args[0])
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "subvault reset diff: %s\n", printableText(err.Error()))
				return exitFailure
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if changes == nil {
					changes = []reset.Change{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(changes); err != nil {
					return exitFailure
				}
				return exitOK
			}
			var total int64
			for _, c := range changes {
				fmt.Fprintf(out, "%-8s %-7s %9s  %s\n", c.Kind, c.Type, humanBytes(uint64(max(c.Size, 0))), printable(c.Path))
				total += c.Size
			}
			fmt.Fprintf(out, "%d paths, %s: the next reset of %s throws them away\n", len(changes), humanBytes(uint64(max(total, 0))), printable(args[0]))
			return exitOK
		}),
	}
	configFlag(cmd, &path, "configuration `file`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the changes as a JSON array")
	return cmd
}

// loadResetConfig loads the configuration and checks it has a reset
// section; nil and the exit status when not.
func loadResetConfig(stderr io.Writer, path string) (*config.Config, int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "subvault reset: run it as root (it snapshots and swaps subvolumes)")
		return nil, exitFailure
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, printableText(err.Error()))
		return nil, exitFailure
	}
	if cfg.Reset == nil || len(cfg.Reset.Subvolumes) == 0 {
		fmt.Fprintf(stderr, "subvault reset: %s has no reset section (docs/configuration.md, reset)\n", printable(strings.TrimSpace(cfg.File)))
		return nil, exitUsage
	}
	return cfg, exitOK
}
