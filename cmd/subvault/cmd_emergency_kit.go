package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/emergencykit"
)

const emergencyKitAbout = `Writes the emergency kit: a document to print with everything needed to
restore the backups on a bare machine with no subvault, from a live USB with
only restic. For each repository of PLAN (or of every plan): its location as
configured (with any credentials in it), the password read from
password_file, password_command or the credential (or, when it cannot be
read, where it is kept), the env_file's backend keys, a QR code of the
password for a phone, and the exact restic commands that list and restore
each plan's archives (tag subvault:PLAN, this host); plus the restic version
that wrote them and how to get restic. The kit opens each repository with
the password it holds, so a kit that says "Checked: the password above
opened it" is known to work.

It reads the configuration and the secrets itself, never over D-Bus, so it
runs as root only. Two files are written in --out, mode 0600:
subvault-emergency-kit-HOST[-PLAN]-DATE.html (prints on one or two A4 pages,
the QR code as an image) and .txt (plain text, the QR code in Unicode half
blocks). An existing file is never overwritten without --force.

The files hold secrets: print them, keep the paper away from the machine,
and delete the files. Every command line in the text kit starts with "$ ",
so a script can pick them out:

  sed -n 's/^ *\$ //p' subvault-emergency-kit-*.txt

On a rescue machine, a repository that moved (a disk mounted elsewhere)
needs only a new RESTIC_REPOSITORY; see "Restore a whole machine to a new
disk" in docs/recovery.md.

Exit status: 0 written, 1 not root, no plan or files exist, 2 wrong command
line.`

type emergencyKitOptions struct {
	config, out, format string
	force               bool
}

func newEmergencyKitCommand() *cobra.Command {
	var opts emergencyKitOptions
	cmd := &cobra.Command{
		Use:               "emergency-kit [PLAN] [--config PATH] [--out DIR] [--format html|text|both] [--force]",
		Short:             "write the printable kit that restores the backups without subvault (root)",
		Long:              emergencyKitAbout,
		GroupID:           groupAdmin,
		Args:              atMost(1),
		ValidArgsFunction: completeArgs(planNames),
		RunE: runs(func(cmd *cobra.Command, args []string) int {
			var plan string
			if len(args) > 0 {
				plan = args[0]
			}
			return runEmergencyKit(cmd.OutOrStdout(), cmd.ErrOrStderr(), plan, opts)
		}),
	}
	configFlag(cmd, &opts.config, "configuration `file`")
	cmd.Flags().StringVar(&opts.out, "out", ".", "`directory` to write the kit in")
	_ = cmd.MarkFlagDirname("out")
	cmd.Flags().StringVar(&opts.format, "format", "both", "`kind` of files to write: html, text or both")
	completeFlag(cmd, "format", fixed("html", "text", "both"))
	cmd.Flags().BoolVar(&opts.force, "force", false, "overwrite kit files of the same name")
	return cmd
}

func runEmergencyKit(stdout, stderr io.Writer, plan string, opts emergencyKitOptions) int {
	var exts []string
	switch opts.format {
	case "both":
		exts = []string{"html", "txt"}
	case "html":
		exts = []string{"html"}
	case "text":
		exts = []string{"txt"}
	default:
		fmt.Fprintf(stderr, "subvault emergency-kit: --format %q: expected html, text or both\n", opts.format)
		return exitUsage
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "subvault emergency-kit: must run as root: the kit holds the repositories' passwords and keys, which only root may read (sudo subvault emergency-kit)")
		return exitFailure
	}

	cfg, err := config.Load(opts.config)
	if err != nil {
		fmt.Fprintln(stderr, printableText(err.Error()))
		return exitFailure
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	kit, err := emergencykit.Build(context.Background(), cfg, emergencykit.Options{Plan: plan, SubvaultVersion: version, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "subvault emergency-kit: %s\n", printableText(err.Error()))
		return exitFailure
	}

	name := "subvault-emergency-kit-" + fileWord(kit.Host)
	if plan != "" {
		name += "-" + fileWord(plan)
	}
	name += "-" + kit.Made.Format("2006-01-02")
	var files []kitFile
	for _, ext := range exts {
		var b bytes.Buffer
		if ext == "html" {
			err = kit.WriteHTML(&b)
		} else {
			err = kit.WriteText(&b)
		}
		if err != nil {
			fmt.Fprintf(stderr, "subvault emergency-kit: %s\n", printableText(err.Error()))
			return exitFailure
		}
		files = append(files, kitFile{path: filepath.Join(opts.out, name+"."+ext), content: b.Bytes()})
	}
	if !opts.force {
		for _, f := range files {
			if _, err := os.Lstat(f.path); err == nil {
				fmt.Fprintf(stderr, "subvault emergency-kit: %s exists; nothing written (--force overwrites it)\n", f.path)
				return exitFailure
			}
		}
	}
	var written []string
	for _, f := range files {
		if err := writeSecretFile(f.path, f.content, opts.force); err != nil {
			fmt.Fprintf(stderr, "subvault emergency-kit: %s\n", printableText(err.Error()))
			return exitFailure
		}
		written = append(written, f.path)
		fmt.Fprintf(stdout, "wrote %s\n", f.path)
	}

	for _, r := range kit.Repositories {
		if r.Password == "" {
			fmt.Fprintf(stderr, "subvault emergency-kit: repository %s: the password is not in the kit (%s); write it on the paper by hand\n", r.Name, printable(r.PasswordProblem))
		}
		if r.EnvProblem != "" {
			fmt.Fprintf(stderr, "subvault emergency-kit: repository %s: the env_file's keys are not in the kit (%s)\n", r.Name, printable(r.EnvProblem))
		}
		if !r.Opened {
			fmt.Fprintf(stderr, "subvault emergency-kit: repository %s: %s\n", r.Name, printableText(r.Checked))
		}
	}
	fmt.Fprintln(stderr, "WARNING: these files hold the secrets that open your backups (repository passwords, credentials, backend keys):")
	for _, p := range written {
		fmt.Fprintf(stderr, "  %s\n", p)
	}
	fmt.Fprintln(stderr, "Print them, keep the paper away from this machine, then delete the files (shred -u FILE).")
	return exitOK
}

type kitFile struct {
	path    string
	content []byte
}

// writeSecretFile writes content to path with mode 0600: first to a
// temporary file in the same directory, then linked into place, which fails
// if path exists, or, with overwrite, renamed over it. A reader never sees
// half a kit, and a file of another mode is never reused.
func writeSecretFile(path string, content []byte, overwrite bool) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".subvault-emergency-kit-*")
	if err != nil {
		return fmt.Errorf("cannot write the kit: %w", err)
	}
	defer func() {
		// After a link the temporary name is a second copy of the secrets:
		// one that cannot be removed is an error, not litter.
		if rerr := os.Remove(tmp.Name()); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = fmt.Errorf("cannot remove the temporary copy %s of the kit (remove it by hand): %w", tmp.Name(), rerr)
		}
	}()
	_, err = tmp.Write(content)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if overwrite {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; nothing written over it (--force overwrites it)", path)
		}
	}
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// fileWord keeps a host or plan name safe in a file name.
func fileWord(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 || r == ' ' {
			return '_'
		}
		return r
	}, s)
}
