package rollback

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// procPath is where processesUsing looks; tests point it elsewhere.
var procPath = "/proc"

// processesUsing lists the processes whose working directory, root,
// executable, open files or mapped files are in dir, as "PID (NAME)".
func processesUsing(dir string) ([]string, error) {
	entries, err := os.ReadDir(procPath)
	if err != nil {
		return nil, err
	}
	self := strconv.Itoa(os.Getpid())
	inDir := func(p string) bool {
		p = strings.TrimSuffix(p, " (deleted)")
		return p == dir || strings.HasPrefix(p, dir+"/")
	}
	var out []string
	for _, e := range entries {
		pid := e.Name()
		if _, err := strconv.Atoi(pid); err != nil || pid == self {
			continue
		}
		base := filepath.Join(procPath, pid)
		links := []string{filepath.Join(base, "cwd"), filepath.Join(base, "root"), filepath.Join(base, "exe")}
		if fds, err := os.ReadDir(filepath.Join(base, "fd")); err == nil {
			for _, fd := range fds {
				links = append(links, filepath.Join(base, "fd", fd.Name()))
			}
		}
		using := false
		for _, l := range links {
			if target, err := os.Readlink(l); err == nil && inDir(target) {
				using = true
				break
			}
		}
		if !using {
			if maps, err := os.ReadFile(filepath.Join(base, "maps")); err == nil {
				for _, line := range strings.Split(string(maps), "\n") {
					if i := strings.Index(line, " /"); i >= 0 && inDir(strings.TrimSpace(line[i:])) {
						using = true
						break
					}
				}
			}
		}
		if using {
			comm, _ := os.ReadFile(filepath.Join(base, "comm"))
			out = append(out, fmt.Sprintf("%s (%s)", pid, strings.TrimSpace(string(comm))))
		}
	}
	slices.Sort(out)
	return out, nil
}
