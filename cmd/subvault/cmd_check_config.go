package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/subvault/subvault/daemon/config"
)

const defaultConfigPath = config.DefaultPath

const checkConfigAbout = `Loads and validates the configuration file and prints the verdict: the
plans it defines, or every error as FILE:LINE: KEY.PATH: what is wrong;
expected ... Nothing else happens. The unit runs it before the daemon starts
and before a reload.

Exit status: 0 valid, 1 invalid or unreadable, 2 wrong command line.`

func runCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check-config", "[--config PATH] [--quiet]", checkConfigAbout, stdout, stderr)
	path := fs.String("config", defaultConfigPath, "configuration `file` to check")
	quiet := fs.Bool("quiet", false, "print nothing when the file is valid")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}

	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, printableText(err.Error()))
		var list *config.Errors
		if errors.As(err, &list) && len(list.List) > 1 {
			fmt.Fprintf(stderr, "%s: %d errors; the file was refused and nothing else happened\n", printable(*path), len(list.List))
		}
		return exitFailure
	}
	if *quiet {
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: valid: %s, %s\n", printable(cfg.File),
		plural(len(cfg.Repositories), "repository", "repositories"), plural(len(cfg.Plans), "plan", "plans"))
	for _, name := range cfg.PlanNames() {
		p := cfg.Plans[name]
		schedule := p.Schedule
		if schedule == "" {
			schedule = "manual only"
		}
		fmt.Fprintf(stdout, "  plan %s: %s -> repository %s, schedule %s\n",
			printable(name), strings.Join(printableAll(p.Subvolumes), ", "), printable(p.Repository), printable(schedule))
	}
	return exitOK
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
