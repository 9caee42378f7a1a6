package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/subvault/subvault/restic"
)

// repositoryOptions decodes what a repository gives every restic command:
// options, ssh, limit_upload, limit_download and connections. The url is
// decoded already: options must belong to its backend, and ssh to sftp.
func (p *parser) repositoryOptions(m *mapping, repo *Repository) {
	backend := ""
	if repo.URL != "" {
		backend = restic.Backend(repo.URL)
	}
	if e, path, ok := m.get("limit_upload"); ok {
		repo.LimitUpload, _ = p.count(e.value, path, 1)
	}
	if e, path, ok := m.get("limit_download"); ok {
		repo.LimitDownload, _ = p.count(e.value, path, 1)
	}
	connectionsKey := ""
	if e, path, ok := m.get("connections"); ok {
		repo.Connections, _ = p.count(e.value, path, 1)
		connectionsKey = backend + ".connections"
	}
	sshEntry, sshPath, hasSSH := m.get("ssh")
	if hasSSH {
		p.ssh(sshEntry, sshPath, repo, backend)
	}
	e, path, ok := m.get("options")
	if !ok {
		return
	}
	const expected = `a mapping of restic backend options to strings, such as {rest.connections: "4"} ("restic options" lists them)`
	entries, ok := p.pairs(e.value, path, expected)
	if !ok {
		return
	}
	for _, o := range entries {
		opath := join(path, o.name)
		if !restic.OptionKeyRE.MatchString(o.name) {
			p.fail(o.key, opath, fmt.Sprintf("%q is not a backend option", o.name), `BACKEND.OPTION in lower case, such as rest.connections or s3.region ("restic options" lists them)`)
			continue
		}
		prefix, _, _ := strings.Cut(o.name, ".")
		switch {
		case backend != "" && prefix != backend:
			p.fail(o.key, opath, fmt.Sprintf("is an option of the %s backend, but the url is a %s repository: restic would ignore it", prefix, backend),
				fmt.Sprintf("options of the %s backend (%s.*)", backend, backend))
			continue
		case o.name == connectionsKey:
			p.fail(o.key, opath, "is set by connections too", "one of the two")
			continue
		case hasSSH && (o.name == "sftp.command" || o.name == "sftp.args"):
			p.fail(o.key, opath, fmt.Sprintf("is set by ssh (line %d) too", sshEntry.key.Line), "ssh or "+o.name+", not both")
			continue
		}
		const valueExpected = `the option's value as a string, such as "4" (quoted)`
		v, ok := p.str(o.value, opath, valueExpected)
		if !ok {
			continue
		}
		switch {
		case v == "":
			p.fail(resolve(o.value), opath, "is empty", valueExpected)
			continue
		case strings.ContainsAny(v, "\n\r\x00"):
			p.fail(resolve(o.value), opath, "has a line break", "one line")
			continue
		}
		if o.name == "sftp.command" {
			if program := firstWord(v); program != "" {
				p.names(o.value, opath, program, roleProgram)
			}
		}
		repo.Options = append(repo.Options, restic.Option{Key: o.name, Value: v})
	}
}

// ssh decodes an sftp repository's ssh block.
func (p *parser) ssh(e pair, path string, repo *Repository, backend string) {
	m := p.mapping(e.key, e.value, path, "a mapping with command, or with any of config_file, key and known_hosts", sshKeys)
	if m == nil {
		return
	}
	if backend != "" && backend != "sftp" {
		p.fail(e.key, path, fmt.Sprintf("is set, but the url is a %s repository", backend), "ssh only for an sftp url (sftp:user@host:/path)")
		return
	}
	s := &repo.SSH
	if e, path, ok := m.get("command"); ok {
		const expected = `the whole command restic runs to reach the sftp server (restic's sftp.command), such as "ssh -i /etc/subvault/nas.key backup@nas -s sftp"`
		if v, ok := p.str(e.value, path, expected); ok {
			switch {
			case strings.TrimSpace(v) == "":
				p.fail(resolve(e.value), path, "is empty", expected)
			case strings.ContainsAny(v, "\n\r\x00"):
				p.fail(resolve(e.value), path, "has a line break", expected)
			default:
				s.Command = v
				if program := firstWord(v); program != "" {
					p.names(e.value, path, program, roleProgram)
				}
			}
		}
		for _, k := range []string{"config_file", "key", "known_hosts"} {
			if other, opath, ok := m.get(k); ok {
				p.fail(other.key, opath, fmt.Sprintf("is set with command (line %d)", e.key.Line),
					"either command (all of ssh's command line), or config_file, key and known_hosts (subvault builds the command)")
			}
		}
		return
	}
	files := []struct {
		key, example string
		role         fileRole
		dst          *string
	}{
		{"config_file", "/etc/subvault/ssh_config", roleRead, &s.ConfigFile},
		{"key", "/etc/subvault/nas.key", roleSecret, &s.Key},
		{"known_hosts", "/etc/subvault/nas.known_hosts", roleRead, &s.KnownHosts},
	}
	for _, f := range files {
		e, path, ok := m.get(f.key)
		if !ok {
			continue
		}
		v, good := p.absPath(e.value, path, "an absolute path such as "+f.example, false)
		if !good {
			continue
		}
		if strings.ContainsAny(v, "'\"\\\n\r") {
			p.fail(resolve(e.value), path, fmt.Sprintf("%q has a quote, a backslash or a line break, which restic's sftp.command cannot carry", v),
				"a path without them")
			continue
		}
		*f.dst = filepath.Clean(v)
		p.names(e.value, path, *f.dst, f.role)
	}
	if s.IsZero() {
		if len(resolve(e.value).Content) > 0 {
			return // what is in it was refused already
		}
		p.fail(e.key, path, "is empty", "command, or any of config_file, key and known_hosts")
		return
	}
	// The command subvault will run: ssh, found in PATH.
	p.names(e.value, path, "ssh", roleProgram)
	if repo.URL != "" {
		if _, err := restic.SFTPCommand(repo.URL, repo.SSHFiles()); err != nil {
			p.fail(e.key, path, "cannot be used with the url: "+err.Error(), "an sftp url such as sftp:user@host:/path or sftp://user@host:2222//path")
		}
	}
}

// SSHFiles is the repository's ssh files, as restic.SFTPCommand takes them.
func (r *Repository) SSHFiles() restic.SSH {
	return restic.SSH{ConfigFile: r.SSH.ConfigFile, Key: r.SSH.Key, KnownHosts: r.SSH.KnownHosts}
}
