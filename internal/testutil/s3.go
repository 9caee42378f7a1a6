package testutil

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// WeedVersion is the SeaweedFS the S3 tests run: the version of
// github.com/seaweedfs/seaweedfs the Go module proxy serves, which
// .ci/weed builds once into WeedCacheBinary (`.ci/deps test` runs it).
// .ci/weed names the same version (TestWeedVersionMatchesCI checks).
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// WeedCacheBinary is where .ci/weed builds SeaweedFS's weed:
// $SUBVAULT_CACHE (default ~/.cache/subvault)/weed-WeedVersion/weed.
// $SUBVAULT_WEED names another binary instead.
func WeedCacheBinary() string {
	if b := os.Getenv("SUBVAULT_WEED"); b != "" {
		return b
	}
	return filepath.Join(subvaultCache(), "weed-"+WeedVersion, "weed")
}

// S3Server is SeaweedFS (`weed server -s3`: master, volume server, filer
// and S3 gateway in one process) on loopback ports, with its data in a
// temporary directory and one S3 identity (AccessKey, SecretKey) allowed
// everything. restic creates the bucket itself at init.
type S3Server struct {
	*Server
	// Host and Port are the S3 endpoint (Host is 127.0.0.1).
	Host string
	Port int
	// AccessKey and SecretKey are the identity's credentials, for
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (Env).
	AccessKey, SecretKey string
	// Bucket is the bucket Repository puts repositories in.
	Bucket string
	// Dir holds SeaweedFS's data.
	Dir string
	// FilerPort is the filer's HTTP port (the bucket's objects are under
	// /buckets/Bucket/ there).
	FilerPort int
	sockets   []string
}

// NewS3Server starts SeaweedFS with its S3 gateway and stops it when the
// test ends. It needs the weed binary .ci/weed builds (`.ci/deps test`).
// It skips under -short.
func NewS3Server(t testing.TB) *S3Server {
	t.Helper()
	SkipShort(t, "SeaweedFS")
	weed := WeedCacheBinary()
	if fi, err := os.Stat(weed); err != nil || fi.Mode()&0o111 == 0 {
		SkipOrFail(t, "SeaweedFS's weed at "+weed+": run .ci/weed (or .ci/deps test), or set SUBVAULT_WEED")
	}
	dir := serverDir(t, "s3")
	// Its eight listeners' ports, all different.
	free := FreePorts(t, 8)
	s := &S3Server{
		Host: "127.0.0.1", Port: free[0],
		AccessKey: "subvault-test-access", SecretKey: "subvault-test-secret-61b7",
		Bucket: "subvault-test", Dir: filepath.Join(dir, "data"), FilerPort: free[1],
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "s3.json")
	WriteSecret(t, conf, fmt.Sprintf(`{"identities": [{"name": "subvault-test",
  "credentials": [{"accessKey": %q, "secretKey": %q}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
`, s.AccessKey, s.SecretKey))
	ports := map[string]int{}
	for i, p := range []string{"master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port.grpc", "s3.port.grpc"} {
		ports[p] = free[2+i]
	}
	ports["filer.port"], ports["s3.port"] = s.FilerPort, s.Port
	args := []string{"server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir=" + s.Dir,
		"-volume.max=0", "-master.volumeSizeLimitMB=64", "-volume.minFreeSpace=64MiB",
		// No report to SeaweedFS's telemetry server: the tests talk to
		// loopback only.
		"-master.telemetry=false",
		// A restart over existing data elects its leader anew instead of
		// resuming the old raft state: ready in about 17 s instead of 29.
		"-master.resumeState=false",
		"-filer", "-s3", "-s3.config=" + conf,
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
	}
	for p, n := range ports {
		args = append(args, "-"+p+"="+strconv.Itoa(n))
	}
	// weed puts its in-process gRPC sockets at fixed paths in /tmp (no
	// flag moves them); they are removed when the server is stopped.
	for _, svc := range []string{"master", "volume", "filer", "s3"} {
		s.sockets = append(s.sockets, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", svc, ports[svc+".port.grpc"]))
	}
	t.Cleanup(s.removeSockets) // runs after the server's own cleanup kills it
	newCmd := func() *exec.Cmd {
		s.removeSockets()
		cmd := exec.Command(weed, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}
		return cmd
	}
	client := &http.Client{Timeout: 5 * time.Second}
	ready := func() error {
		// The filer stores a file: master, volume server and filer work.
		if err := filerPut(client, fmt.Sprintf("http://127.0.0.1:%d/subvault-ready/probe", s.FilerPort)); err != nil {
			return fmt.Errorf("filer: %w", err)
		}
		// The S3 gateway answers (403 to an anonymous request).
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", s.Port))
		if err != nil {
			return fmt.Errorf("s3: %w", err)
		}
		_ = resp.Body.Close()
		return nil
	}
	s.Server = startServer(t, "weed server -s3", newCmd, ready)
	return s
}

func (s *S3Server) removeSockets() {
	for _, p := range s.sockets {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(p)
		}
	}
}

// filerPut uploads a small file to a SeaweedFS filer URL.
func filerPut(client *http.Client, url string) error {
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	part, err := w.CreateFormFile("file", "probe")
	if err != nil {
		return err
	}
	_, _ = part.Write([]byte("ready\n"))
	_ = w.Close()
	resp, err := client.Post(url, w.FormDataContentType(), &body)
	if err != nil {
		return err
	}
	defer resp.Body.Close() //nolint:errcheck // read below
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Repository is restic's S3 repository for a path in Bucket:
// "s3:http://127.0.0.1:PORT/subvault-test/name". restic needs Env.
func (s *S3Server) Repository(name string) string {
	return fmt.Sprintf("s3:http://%s/%s/%s", hostPort(s.Host, s.Port), s.Bucket, name)
}

// Env is the credentials for restic's environment:
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
func (s *S3Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}
