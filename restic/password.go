package restic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"unicode"
)

// ReadPassword returns the repository password as restic itself would read
// it from the configured source: the content of PasswordFile or
// CredentialFile, or the standard output of PasswordCommand (split into
// words like restic does, without a shell), with surrounding white space
// removed. Only the emergency kit needs the password itself; everything
// else hands the source to restic.
func (repo Repository) ReadPassword(ctx context.Context) (string, error) {
	var raw []byte
	switch {
	case repo.PasswordFile != "" || repo.CredentialFile != "":
		path := repo.PasswordFile
		if path == "" {
			path = repo.CredentialFile
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("cannot read %s: %w", repo.passwordSource(), err)
		}
		raw = data
	case repo.PasswordCommand != "":
		argv, err := splitCommand(repo.PasswordCommand)
		if err != nil {
			return "", fmt.Errorf("password_command: %w", err)
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if len(msg) > 200 {
				msg = msg[:200] + "..."
			}
			if msg != "" {
				return "", fmt.Errorf("password_command %s failed: %w: %s", argv[0], err, msg)
			}
			return "", fmt.Errorf("password_command %s failed: %w", argv[0], err)
		}
		raw = out
	default:
		return "", errors.New("no password source configured")
	}
	pw := strings.TrimSpace(string(raw))
	if pw == "" {
		return "", fmt.Errorf("%s is empty", repo.passwordSource())
	}
	return pw, nil
}

// splitCommand splits a command line into words as restic does for
// RESTIC_PASSWORD_COMMAND: white space separates words, and single or double
// quotes group white space into one word (no shell: no variables, globs or
// escapes).
func splitCommand(line string) ([]string, error) {
	var words []string
	var word strings.Builder
	inWord := false
	var quote rune
	for _, c := range line {
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			word.WriteRune(c)
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case unicode.IsSpace(c):
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		words = append(words, word.String())
	}
	if len(words) == 0 {
		return nil, errors.New("empty command")
	}
	return words, nil
}
