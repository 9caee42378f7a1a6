package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

const reloadAbout = `Makes the daemon re-read its configuration file. An invalid file is
refused, with every problem as FILE:LINE: KEY: what is wrong, and the
configuration in force stays.`

func newReloadCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:     "reload [--bus BUS]",
		Short:   "make the daemon re-read its configuration",
		Long:    reloadAbout,
		GroupID: groupAdmin,
		Args:    expects(0, 0, "no arguments"),
	}, withoutJSON, runReload)
}

func runReload(cc *clientCmd, _ []string) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	if err := cc.c.Reload(ctx); err != nil {
		var cerr *client.Error
		if errors.As(err, &cerr) && cerr.Name == contract.ErrorInvalidConfig {
			fmt.Fprintf(cc.stderr, "subvault reload: %s\n", printableText(err.Error()))
			return exitFailure
		}
		return cc.fail(err)
	}
	fmt.Fprintln(cc.stdout, "configuration reloaded")
	return exitOK
}
