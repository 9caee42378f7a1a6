package planstore

import (
	"slices"
	"strings"
	"testing"

	"github.com/subvault/subvault/daemon/config"
)

// What a repository entry gives every restic command: its options in file
// order, connections as the url's backend's option, the ssh block as
// sftp.command, and the limits.
func TestRepositoryOptions(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("test.yaml", []byte(`repositories:
  nas:
    url: sftp://backup@nas:2222//srv/restic
    password_file: /etc/subvault/nas.pass
    ssh: {key: /etc/subvault/nas.key, known_hosts: /etc/subvault/nas.known_hosts}
    connections: 3
    limit_upload: 100
    limit_download: 200
  own:
    url: sftp:nas:/srv/restic
    password_file: /etc/subvault/nas.pass
    ssh: {command: "ssh nas -s sftp"}
  rest:
    url: rest:http://127.0.0.1:8000/r/
    password_file: /etc/subvault/nas.pass
    options: {rest.connections: "8"}
  local:
    url: /srv/restic
    password_file: /etc/subvault/nas.pass
    connections: 1
plans:
  home: {subvolumes: [/home], repository: nas}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"nas": {"--option=sftp.connections=3", "--option=sftp.command=ssh -i /etc/subvault/nas.key -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/subvault/nas.known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -p 2222 -l backup nas -s sftp",
			"--limit-upload=100", "--limit-download=200"},
		"own":   {"--option=sftp.command=ssh nas -s sftp"},
		"rest":  {"--option=rest.connections=8"},
		"local": {"--option=local.connections=1"},
	}
	for name, args := range want {
		repo, err := Repository(cfg.Repositories[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := repo.GlobalArgs(); !slices.Equal(got, args) {
			t.Errorf("%s: flags\n%s\nwant\n%s", name, strings.Join(got, "\n"), strings.Join(args, "\n"))
		}
		if repo.URL != cfg.Repositories[name].URL || repo.PasswordFile != "/etc/subvault/nas.pass" {
			t.Errorf("%s: %+v", name, repo)
		}
	}
	if _, err := Repository(&config.Repository{Name: "x", URL: "sftp:h", SSH: config.SSH{Key: "/k"}}); err == nil || !strings.Contains(err.Error(), "repository x: ssh:") {
		t.Errorf("a url the ssh block cannot use: %v", err)
	}
}
