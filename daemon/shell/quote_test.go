package shell

import (
	"os/exec"
	"testing"
)

func TestQuoteRoundTripsThroughSh(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain/path-1.2_x@y:z,%+=", "two words", "it's", `back\slash`, "$HOME", "a\nb", "*", "\xff"} {
		out, err := exec.Command("sh", "-c", "printf %s "+Quote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("Quote(%q) = %s: sh printed %q (%v)", s, Quote(s), out, err)
		}
	}
	if got := Quote("/srv/data"); got != "/srv/data" {
		t.Errorf("a plain path was quoted: %s", got)
	}
	if got := Join([]string{"rm", "a b"}); got != "rm 'a b'" {
		t.Errorf("Join = %s", got)
	}
}

func TestQuoteRepositoryWords(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/srv/restic/laptop":               "/srv/restic/laptop",
		"sftp:backup@nas:/srv/restic":      "sftp:backup@nas:/srv/restic",
		"rest:https://u:p@host:8000/repo/": "rest:https://u:p@host:8000/repo/",
		"subvault:home":                    "subvault:home",
		"k e y":                            "'k e y'",
		"it's":                             `'it'\''s'`,
		"$HOME;rm -rf /":                   `'$HOME;rm -rf /'`,
		"":                                 "''",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
		// What the shell makes of it is the original.
		out, err := exec.Command("/bin/sh", "-c", "printf %s "+Quote(in)).Output()
		if err != nil || string(out) != in {
			t.Errorf("sh reads %s as %q (%v), want %q", Quote(in), out, err, in)
		}
	}
}
