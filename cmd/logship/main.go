// Command logship is the log shipper: the per-host agent and the central
// aggregator in one binary.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/aggregator"
	"github.com/logship/logship/broker"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/plugins/all"
	"github.com/logship/logship/service"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{code: 2, err: err} }

func main() {
	if path := os.Getenv("LOGSHIP_MEMPROFILE"); path != "" {
		// For benchmarks: the heap profile at the largest live heap seen.
		stop := startMemProfile(path)
		code := run(os.Args[1:])
		stop()
		os.Exit(code)
	}
	if path := os.Getenv("LOGSHIP_CPUPROFILE"); path != "" {
		// For benchmarks: a CPU profile of the whole run.
		if stop, err := startCPUProfile(path); err == nil {
			code := run(os.Args[1:])
			stop()
			os.Exit(code)
		}
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(os.Stderr, ee.err)
		}
		return ee.code
	}
	// cobra's own errors: unknown command or flag, missing argument.
	fmt.Fprintf(os.Stderr, "logship: %v\nRun 'logship --help' for usage.\n", err)
	return 2
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "logship",
		Short:         "logship ships logs from every host to a central tier and on to Kafka, without losing any",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(roleCmd(agent.Role, "Run the per-host agent: tail files, accept forward, buffer, ship"),
		roleCmd(aggregator.Role, "Run the central aggregator: accept agents, buffer, route to sinks and topics"),
		validateCmd(), versionCmd(), bufferCmd())
	return root
}

// roles are the roles the binary runs, by name.
var roles = map[string]conf.Role{agent.Role.Name: agent.Role, aggregator.Role.Name: aggregator.Role}

func roleCmd(role conf.Role, short string) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   role.Name + " -c FILE",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if path == "" {
				return usageErr(errors.New("logship " + role.Name + ": -c/--config FILE is required"))
			}
			svc, err := service.New(role, path, all.Registry())
			if err != nil {
				return usageErr(err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reload <- struct{}{}:
					default:
					}
				}
			}()
			if err := svc.Run(ctx, reload); err != nil {
				svc.Logger().Error("fatal", errField(err))
				return &exitError{code: 1, err: fmt.Errorf("logship %s: %w", role.Name, err)}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "", "config file (YAML)")
	return c
}

func validateCmd() *cobra.Command {
	var path, role string
	c := &cobra.Command{
		Use:   "validate -c FILE [--role agent|aggregator]",
		Short: "Check a config file and print every error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return usageErr(errors.New("logship validate: -c/--config FILE is required"))
			}
			r, ok := roles[role]
			if !ok {
				return usageErr(fmt.Errorf("logship validate: unknown role %q (want agent or aggregator)", role))
			}
			if _, err := conf.Load(path, r, all.Registry()); err != nil {
				return usageErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid %s config\n", path, role)
			return nil
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "", "config file (YAML)")
	c.Flags().StringVar(&role, "role", agent.Role.Name, "role to validate for: agent or aggregator")
	return c
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "logship %s\n", version)
		},
	}
}

func bufferCmd() *cobra.Command {
	c := &cobra.Command{Use: "buffer", Short: "Offline tools for a data_dir's buffer (the process must be stopped)"}
	var dir string
	var repair bool
	check := &cobra.Command{
		Use:   "check -d DATA_DIR [--repair]",
		Short: "Verify every buffered record; report torn or corrupt records",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageErr(errors.New("logship buffer check: -d/--data-dir DATA_DIR is required"))
			}
			rep, err := broker.Check(bufferDir(dir), repair)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := rep.WriteText(cmd.OutOrStdout()); err != nil {
				return &exitError{code: 1, err: err}
			}
			if !rep.OK() && !repair {
				return &exitError{code: 1, err: errors.New("the buffer has damaged records; run with --repair to cut them off")}
			}
			return nil
		},
	}
	check.Flags().StringVarP(&dir, "data-dir", "d", "", "the service's data_dir")
	check.Flags().BoolVar(&repair, "repair", false, "truncate torn tails and drop corrupt records")
	var idir string
	inspect := &cobra.Command{
		Use:   "inspect -d DATA_DIR",
		Short: "Show partitions, segments, cursors (by output name) and their lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if idir == "" {
				return usageErr(errors.New("logship buffer inspect: -d/--data-dir DATA_DIR is required"))
			}
			rep, err := broker.Inspect(bufferDir(idir))
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := rep.WriteText(cmd.OutOrStdout()); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	inspect.Flags().StringVarP(&idir, "data-dir", "d", "", "the service's data_dir")
	c.AddCommand(check, inspect)
	return c
}
