package onsite

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/internal/testutil"
)

// childEnv makes the test binary a daemon that sends and is killed
// mid-receive (TestDaemonKilledMidReceive): its value is a childJob.
const childEnv = "SUBVAULT_ONSITE_CHILD"

type childJob struct {
	StateDir   string
	TargetPath string
	Subvolumes []string
	JobID      uint32
}

func TestMain(m *testing.M) {
	testutil.HostileMain()
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(runChild(v))
	}
	os.Exit(m.Run())
}

// runChild sends, says "receiving" on stdout at the stream's first bytes,
// and waits there to be killed.
func runChild(v string) int {
	var j childJob
	if err := json.Unmarshal([]byte(v), &j); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	plan := &config.Plan{Name: "p", Subvolumes: j.Subvolumes, SendTo: []string{"usb"}}
	cfg := &config.Config{Plans: map[string]*config.Plan{"p": plan},
		Targets:  map[string]*config.Target{"usb": {Name: "usb", Path: j.TargetPath}},
		Settings: config.Settings{StateDir: j.StateDir}}
	_, err := Send(context.Background(), Options{Config: cfg, Plan: plan, Target: "usb", JobID: j.JobID,
		Progress: func(uint64) {
			fmt.Println("receiving")
			time.Sleep(time.Hour)
		}})
	fmt.Fprintln(os.Stderr, "send ended:", err)
	return 1
}

// plantLink is what a local user does to a target directory others may
// write: a link named like the plan's subvolume, to a place of theirs.
var _ = func() bool {
	testutil.RegisterHostile("plant-link", func(args []string) error {
		return os.Symlink(args[0], args[1])
	})
	return true
}()
