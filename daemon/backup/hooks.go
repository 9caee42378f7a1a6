package backup

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// hookOutputLimit bounds what a hook's output adds to the log and the error.
const hookOutputLimit = 4096

// runHooks runs each argv of one hook key in order, with env added to a
// minimal environment, and stops at the first that fails.
func runHooks(ctx context.Context, logger *slog.Logger, key string, argvs [][]string, env []string) error {
	for _, argv := range argvs {
		if err := runHook(ctx, logger, key, argv, env); err != nil {
			return err
		}
	}
	return nil
}

func runHook(ctx context.Context, logger *slog.Logger, key string, argv, env []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...) //nolint:gosec // hooks are the administrator's own commands
	cmd.Env = append(baseEnv(), env...)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	logger.Info("running hook", "hook", key, "argv", argv)
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if err != nil {
		logger.Error("hook failed", "hook", key, "argv", argv, "err", err, "output", text, "duration", time.Since(start))
		if text != "" {
			return fmt.Errorf("%s hook %q failed: %w: %s", key, strings.Join(argv, " "), err, lastLine(text))
		}
		return fmt.Errorf("%s hook %q failed: %w", key, strings.Join(argv, " "), err)
	}
	logger.Info("hook done", "hook", key, "argv", argv, "output", text, "duration", time.Since(start))
	return nil
}

// baseEnv is what a hook or restic starts from: never the daemon's whole
// environment, which may hold secrets of its own.
func baseEnv() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{"PATH=" + path, "LANG=C.UTF-8"}
	for _, k := range []string{"HOME", "TMPDIR", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// limitedBuffer keeps the first hookOutputLimit bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	dropped bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := hookOutputLimit - b.Len(); room < len(p) {
		b.dropped = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

func (b *limitedBuffer) String() string {
	if b.dropped {
		return b.Buffer.String() + "\n[output cut]"
	}
	return b.Buffer.String()
}
