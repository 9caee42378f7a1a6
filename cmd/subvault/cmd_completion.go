package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

const completionAbout = `Prints the completion script of a shell: bash, zsh or fish. It completes
the commands and their options, and asks the daemon (on the bus the
command line being completed names, the system bus otherwise) for plan
names, archive ids, snapshot names and job ids; a daemon that is not
running is not started, and offers nothing.

The Debian package and "make install" install the scripts where each
shell finds them:

  bash: /usr/share/bash-completion/completions/subvault
  zsh:  /usr/share/zsh/vendor-completions/_subvault
  fish: /usr/share/fish/vendor_completions.d/subvault.fish

To try one without installing it:

  source <(subvault completion bash)
  subvault completion zsh > "${fpath[1]}/_subvault"
  subvault completion fish | source`

// The shells completion writes a script for, and how.
var completionScripts = map[string]func(root *cobra.Command, w io.Writer) error{
	"bash": func(root *cobra.Command, w io.Writer) error { return root.GenBashCompletionV2(w, true) },
	"zsh":  func(root *cobra.Command, w io.Writer) error { return root.GenZshCompletion(w) },
	"fish": func(root *cobra.Command, w io.Writer) error { return root.GenFishCompletion(w, true) },
}

func newCompletionCommand() *cobra.Command {
	return &cobra.Command{
		Use:       "completion bash|zsh|fish",
		Short:     "print the shell's completion script (plans, archives, snapshots and jobs from the daemon)",
		Long:      completionAbout,
		GroupID:   groupAdmin,
		ValidArgs: []cobra.Completion{"bash", "zsh", "fish"},
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 || completionScripts[args[0]] == nil {
				return fmt.Errorf("expects bash, zsh or fish")
			}
			return nil
		},
		RunE: runs(func(cmd *cobra.Command, args []string) int {
			if err := completionScripts[args[0]](cmd.Root(), cmd.OutOrStdout()); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "subvault completion: cannot write the script: %v\n", err)
				return exitFailure
			}
			return exitOK
		}),
	}
}
