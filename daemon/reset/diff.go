package reset

import (
	"context"
	"errors"

	"github.com/subvault/subvault/daemon/config"
)

// Diff lists what the next reset of path throws away.
func Diff(ctx context.Context, cfg *config.Config, path string) ([]Change, error) {
	return nil, errors.New("reset: diff not built yet")
}
