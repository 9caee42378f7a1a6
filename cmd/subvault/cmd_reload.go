package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

const reloadAbout = `Makes the daemon re-read its configuration file. An invalid file is
refused, with every problem as FILE:LINE: KEY: what is wrong, and the
configuration in force stays.`

func runReload(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("reload", "[--bus BUS]", reloadAbout, false, stdout, stderr)
	if _, code, ok := cc.parse(args, 0, 0, "no arguments"); !ok {
		return code
	}
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	if err := cc.c.Reload(ctx); err != nil {
		var cerr *client.Error
		if errors.As(err, &cerr) && cerr.Name == contract.ErrorInvalidConfig {
			fmt.Fprintf(stderr, "subvault reload: %s\n", printableText(err.Error()))
			return exitFailure
		}
		return cc.fail(err)
	}
	fmt.Fprintln(stdout, "configuration reloaded")
	return exitOK
}
