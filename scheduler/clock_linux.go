package scheduler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// RealClock is the system's wall clock, waited on with a timerfd (see the
// package documentation for why).
func RealClock() Clock { return realClock{} }

type realClock struct{}

// Now strips the monotonic reading so that every comparison the scheduler
// makes is between wall-clock readings, which keep counting during suspend.
func (realClock) Now() time.Time { return time.Now().Round(0) }

func (realClock) Wait(ctx context.Context, until time.Time) error {
	until = until.Round(0)
	if err := ctx.Err(); err != nil {
		return err
	}
	if !time.Now().Before(until) {
		return nil
	}
	fd, err := unix.TimerfdCreate(unix.CLOCK_REALTIME, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cannot create a wall-clock timer: %w", os.NewSyscallError("timerfd_create", err))
	}
	// A non-blocking descriptor becomes part of the runtime's netpoller: the
	// read below parks this goroutine, not a thread, and a read deadline
	// interrupts it. timer keeps fd open; never call timer.Fd(), which would
	// switch the descriptor back to blocking mode.
	timer := os.NewFile(uintptr(fd), "timerfd")
	defer timer.Close() //nolint:errcheck // closing a timer only read: the error says nothing
	if err := timer.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("cannot wait on a wall-clock timer: %w", err)
	}
	value := unix.ItimerSpec{Value: unix.NsecToTimespec(until.UnixNano())}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME|unix.TFD_TIMER_CANCEL_ON_SET, &value, nil); err != nil {
		return fmt.Errorf("cannot arm a wall-clock timer for %s: %w", until.Format(time.RFC3339), os.NewSyscallError("timerfd_settime", err))
	}
	stop := context.AfterFunc(ctx, func() {
		_ = timer.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()

	var expirations [8]byte
	_, err = timer.Read(expirations[:])
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, unix.ECANCELED):
		// The clock was set. A jump past until still counts as reaching it.
		if !time.Now().Before(until) {
			return nil
		}
		return ErrClockChanged
	default:
		return fmt.Errorf("cannot read the wall-clock timer: %w", err)
	}
}
