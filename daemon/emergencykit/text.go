package emergencykit

import (
	"fmt"
	"io"
	"strings"
)

// Labels of the text kit that a script (and the test) may read.
const (
	TextPasswordLabel = "Password (secret): "
	TextLocationLabel = "Location: "
)

// WriteText writes the kit as plain text of at most about 80 columns (long
// secrets excepted), for a terminal, a text printer or a password manager's
// note. Commands start with CommandPrefix after their indentation.
func (k *Kit) WriteText(w io.Writer) error {
	var b strings.Builder
	title := k.Title()
	fmt.Fprintf(&b, "%s\n%s\n\n", title, strings.Repeat("=", len([]rune(title))))
	b.WriteString(wrap("SECRET. This page opens the backups of "+k.Host+" listed below, with no subvault "+
		"and no other file. Print it, keep the paper away from this machine (a drawer at home, a safe, "+
		"a person you trust), and delete the file.", "", 78))
	b.WriteString("\n" + wrap(fmt.Sprintf("Made by subvault %s on %s from %s. The archives were written by %s; any restic as new or newer reads them.",
		k.SubvaultVersion, k.Made.Format("2006-01-02 15:04 MST"), k.ConfigFile, k.Restic), "", 78))

	b.WriteString("\n1. GET RESTIC (on any Linux machine: a live USB will do)\n\n")
	for _, g := range getRestic() {
		b.WriteString(wrap(g[0]+": "+g[1], "   ", 78))
	}

	for i, r := range k.Repositories {
		fmt.Fprintf(&b, "\n%d. REPOSITORY %s (plans: %s)\n\n", i+2, r.Name, planNames(r.Plans))
		secret := ""
		if r.URLHasCredentials {
			secret = " (secret: it holds a password)"
		}
		fmt.Fprintf(&b, "   %s%s%s\n", TextLocationLabel, r.URL, secret)
		if r.Password != "" {
			fmt.Fprintf(&b, "   %s%s\n", TextPasswordLabel, r.Password)
			b.WriteString(wrap("(subvault reads it from "+r.PasswordSource+")", "   ", 78))
		} else {
			b.WriteString(wrap("Password: NOT IN THIS KIT. It is kept in "+r.PasswordSource+". It could not be read: "+
				r.PasswordProblem+". Write it here by hand: ______________________________", "   ", 78))
		}
		if r.EnvFile != "" {
			if r.EnvProblem != "" {
				b.WriteString(wrap("Backend keys: NOT IN THIS KIT. They are kept in env_file "+r.EnvFile+", which could not be read: "+r.EnvProblem, "   ", 78))
			} else {
				b.WriteString(wrap(fmt.Sprintf("Backend keys (secret): %d from env_file %s, in the commands below.", len(r.Env), r.EnvFile), "   ", 78))
			}
		}
		for _, f := range r.Files {
			switch {
			case f.Problem != "":
				b.WriteString(wrap(f.Key+" "+f.Path+": NOT IN THIS KIT. It could not be read: "+f.Problem, "   ", 78))
			case f.Secret:
				b.WriteString(wrap(f.Key+" "+f.Path+" (secret): written back at the same path by the commands below.", "   ", 78))
			default:
				b.WriteString(wrap(f.Key+" "+f.Path+": written back at the same path by the commands below.", "   ", 78))
			}
		}
		b.WriteString(wrap(r.Checked, "   ", 78))
		for _, n := range r.Notes {
			b.WriteString(wrap("Note: "+n, "   ", 78))
		}
		if r.QR != nil {
			b.WriteString("\n   The password as a QR code (scan it with a phone):\n\n")
			for _, line := range r.QR.HalfBlocks() {
				b.WriteString(strings.TrimRight("   "+line, " ") + "\n")
			}
			if r.QRNote != "" {
				b.WriteString(wrap(r.QRNote, "   ", 78))
			}
		}
		b.WriteString("\n   Open the repository; at read, type the password and press Enter:\n\n")
		for _, c := range k.OpenCommands(r) {
			b.WriteString("   " + CommandPrefix + c + "\n")
		}
		for _, p := range r.Plans {
			fmt.Fprintf(&b, "\n   Plan %s: %s\n", p.Name, strings.Join(p.Subvolumes, ", "))
			if p.Latest != nil {
				fmt.Fprintf(&b, "   %d archives; the latest when this kit was made: %s of %s\n",
					p.Archives, p.Latest.ShortID, p.Latest.Time.Local().Format("2006-01-02 15:04"))
			} else if r.Opened {
				b.WriteString("   No archive yet when this kit was made.\n")
			}
			b.WriteString("   List its archives, then restore the latest:\n\n")
			for _, c := range k.PlanCommands(r, p) {
				b.WriteString("   " + CommandPrefix + c + "\n")
			}
		}
	}

	fmt.Fprintf(&b, "\n%d. NOTES\n\n", len(k.Repositories)+2)
	for _, n := range restoreNotes() {
		b.WriteString("   -" + wrap(n, "     ", 78)[4:])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func planNames(plans []Plan) string {
	names := make([]string, len(plans))
	for i, p := range plans {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

// wrap fills text into lines of at most width columns, each starting with
// indent; a word longer than a line (a URL, a secret) gets a line of its own.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if line != indent && len([]rune(line))+1+len([]rune(word)) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	if line != indent {
		b.WriteString(line + "\n")
	}
	return b.String()
}
