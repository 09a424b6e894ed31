"""SIGTERM and SIGHUP stop a command the way Ctrl-C does: `Stopped` (a KeyboardInterrupt) is raised where the
program is, so every `finally` and `atomic_write` cleanup runs, and the exit code is 128 + the signal number."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: Signals that stop a command like Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal, raised in the main thread."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _stop(signum, frame) -> None:
    for sig in STOP_SIGNALS:  # a second signal must not interrupt the cleanup of the first
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals(interruptible: bool = False) -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` while the block runs; the previous handlers come back after it. A signal
    ignored on entry stays ignored (`nohup`). `interruptible`: SIGINT raises KeyboardInterrupt even where the parent
    made it ignored (a background job), as submitit cancels a local job with SIGINT. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = {sig: _stop for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}
    if interruptible:
        wanted[signal.SIGINT] = signal.default_int_handler
    previous = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
