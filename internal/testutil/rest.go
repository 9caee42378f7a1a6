package testutil

import (
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// RESTOptions chooses the flavour of a REST server.
type RESTOptions struct {
	// Auth requires HTTP basic authentication (RESTServer.User and
	// Password); requests without it, or with others, get 401.
	Auth bool
	// AppendOnly refuses every delete (403), as `--append-only` does: new
	// data only, nothing removed.
	AppendOnly bool
}

// RESTServer is Debian's `rclone serve restic` on a loopback port, serving
// restic's REST protocol from a temporary directory.
type RESTServer struct {
	*Server
	// Host and Port are where it listens (Host is 127.0.0.1).
	Host string
	Port int
	// Dir holds the repositories, one directory each.
	Dir string
	// User and Password are the basic-auth credentials (empty without
	// RESTOptions.Auth). The password reaches rclone in its environment
	// (RCLONE_PASS), not its argv.
	User, Password string
	AppendOnly     bool
}

// NewRESTServer starts `rclone serve restic` and stops it when the test
// ends. It needs rclone (Debian's package). It skips under -short.
func NewRESTServer(t testing.TB, opts RESTOptions) *RESTServer {
	t.Helper()
	SkipShort(t, "rclone serve restic")
	rclone := RequireCommand(t, "rclone", "rclone")
	dir := serverDir(t, "rest")
	s := &RESTServer{Host: "127.0.0.1", Port: FreePort(t), Dir: filepath.Join(dir, "data"), AppendOnly: opts.AppendOnly}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", "restic", "--addr", hostPort(s.Host, s.Port)}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		// No rclone.conf is read or written: the served remote is a local path.
		"RCLONE_CONFIG=" + filepath.Join(dir, "rclone.conf"),
		"RCLONE_CACHE_DIR=" + filepath.Join(dir, "cache"),
	}
	if opts.Auth {
		s.User, s.Password = "subvault-test", "rest-secret-9d2e"
		env = append(env, "RCLONE_USER="+s.User, "RCLONE_PASS="+s.Password)
	}
	if opts.AppendOnly {
		args = append(args, "--append-only")
	}
	args = append(args, s.Dir)
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(rclone, args...)
		cmd.Env = env
		return cmd
	}
	client := &http.Client{Timeout: 2 * time.Second}
	ready := func() error {
		// Any HTTP answer (401 with Auth, 404 for no repository) is rclone
		// serving.
		resp, err := client.Get("http://" + hostPort(s.Host, s.Port) + "/")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		return nil
	}
	name := "rclone serve restic"
	if opts.Auth {
		name += " (basic auth)"
	}
	if opts.AppendOnly {
		name += " (append-only)"
	}
	s.Server = startServer(t, name, newCmd, ready)
	return s
}

// Repository is restic's REST repository name under the server, without
// credentials: "rest:http://127.0.0.1:PORT/name/". Against an Auth server
// restic gets 401 with it.
func (s *RESTServer) Repository(name string) string {
	return "rest:http://" + hostPort(s.Host, s.Port) + "/" + name + "/"
}

// RepositoryWithCredentials is Repository with the server's credentials in
// the URL, "rest:http://user:pass@127.0.0.1:PORT/name/" (the only way
// restic 0.14 takes them); pass it in RESTIC_REPOSITORY, never in argv.
// Without Auth it is Repository.
func (s *RESTServer) RepositoryWithCredentials(name string) string {
	return s.RepositoryAs(name, s.User, s.Password)
}

// RepositoryAs is Repository with the credentials user and password in the
// URL (escaped), e.g. wrong ones.
func (s *RESTServer) RepositoryAs(name, user, password string) string {
	if user == "" && password == "" {
		return s.Repository(name)
	}
	return "rest:http://" + url.UserPassword(user, password).String() + "@" + hostPort(s.Host, s.Port) + "/" + name + "/"
}

// RepositoryDir is where the server keeps the repository name.
func (s *RESTServer) RepositoryDir(name string) string {
	return filepath.Join(s.Dir, name)
}

// hostPort is "host:port".
func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
