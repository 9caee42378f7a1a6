package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/subvault/subvault/daemon/config"
)

const defaultConfigPath = config.DefaultPath

func runCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check-config", "[--config PATH] [--quiet]", stdout, stderr)
	path := fs.String("config", defaultConfigPath, "configuration `file` to check")
	quiet := fs.Bool("quiet", false, "print nothing when the file is valid")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}

	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		var list *config.Errors
		if errors.As(err, &list) && len(list.List) > 1 {
			fmt.Fprintf(stderr, "%s: %d errors; the file was refused and nothing else happened\n", *path, len(list.List))
		}
		return exitFailure
	}
	if *quiet {
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: valid: %s, %s\n", cfg.File,
		plural(len(cfg.Repositories), "repository", "repositories"), plural(len(cfg.Plans), "plan", "plans"))
	for _, name := range cfg.PlanNames() {
		p := cfg.Plans[name]
		schedule := p.Schedule
		if schedule == "" {
			schedule = "manual only"
		}
		fmt.Fprintf(stdout, "  plan %s: %s -> repository %s, schedule %s\n",
			name, strings.Join(p.Subvolumes, ", "), p.Repository, schedule)
	}
	return exitOK
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
