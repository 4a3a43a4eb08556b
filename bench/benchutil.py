"""Helpers shared by the Python benches (imported from the script's own directory)."""
import signal
import sys


def clean_up_on_signals():
    """A kill (SIGTERM, SIGHUP) ends the run like Ctrl-C, so the clean-up in the caller's
    `finally` still runs; a second signal (timeout(1) passes one on too) does not cut it short."""
    def stop(n, _frame):
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        sys.exit(128 + n)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
