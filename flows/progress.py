"""One progress line for a whole run: blocks done / total, megapixels per second, ETA.

It is driven from the client side (each block's future finishing, or each block in the
in-process path), so it works the same with a local cluster and with a remote scheduler.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("segpipe")


class Progress:
    """Counts finished blocks and prints at most every ``interval`` seconds (to stderr).

    ``megapixels`` is the area still to segment; :meth:`advance` may pass each block's own
    pixel count for an exact rate (blocks at the image edges are smaller). A run with no block
    finished for ``stall_after`` seconds is reported once (on the stream and as a log warning,
    which Prefect shows in the flow run's logs) until a block finishes again.
    """

    def __init__(
        self, total: int, megapixels: float, *, quiet: bool = False, interval: float = 1.0,
        stream: TextIO | None = None, stall_after: float = 600.0, label: str = "segment",
    ) -> None:
        self.total = total
        self.megapixels = megapixels
        self.quiet = quiet
        self.interval = interval
        self.stream = stream or sys.stderr
        self.stall_after = stall_after
        self.label = label
        self.done = 0
        self.failed = 0
        self.pixels = 0
        self.start = time.monotonic()
        self._last_print = 0.0
        self._last_done_at = self.start
        self.stalled = False
        self.stalls = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, n: int = 1, *, pixels: int | None = None, failed: bool = False) -> None:
        """Record ``n`` finished blocks (``failed`` ones count as done, and are shown)."""
        self.done += n
        self.failed += n if failed else 0
        if pixels is not None:
            self.pixels += pixels
        else:
            self.pixels += int(n * self.megapixels * 1e6 / max(self.total, 1))
        self._last_done_at = time.monotonic()
        self.stalled = False
        self._print(force=self.done == self.total)

    def check_stall(self) -> bool:
        """Report (once per stall) when no block finished for ``stall_after`` seconds."""
        idle = time.monotonic() - self._last_done_at
        if idle >= self.stall_after and not self.stalled and self.done < self.total:
            self.stalled = True
            self.stalls += 1
            message = (
                f"{self.label}: no block finished for {idle:.0f} s ({self.done}/{self.total} "
                "done); workers may be stuck, overloaded or lost"
            )
            log.warning(message)
            if not self.quiet:
                print(f"\nwarning: {message}", file=self.stream, flush=True)
        else:
            self._print()
        return self.stalled

    def line(self) -> str:
        """The current progress text."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        frac = self.done / self.total if self.total else 1.0
        rate = self.pixels / 1e6 / elapsed
        eta_text = f"{elapsed * (1 - frac) / frac:.0f} s" if frac else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{self.label}: {self.done}/{self.total} blocks ({100 * frac:.0f}%{failed}) "
            f"{rate:.2f} MP/s ETA {eta_text}"
        )

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self._last_print < self.interval):
            return
        self._last_print = now
        if self._tty:
            end = "\n" if self.done == self.total else ""
            print(f"\r{self.line()}", end=end, file=self.stream, flush=True)
        else:  # a log file or a pipe: whole lines, at most one per 10 s (and the last)
            self._last_print += max(0.0, 10.0 - self.interval)
            print(self.line(), file=self.stream, flush=True)


class StepProgress:
    """One line for training: ``train: step 12/40 (30%) loss 0.532 ETA 14 s`` on stderr.

    Like :class:`Progress`: rewritten in place on a terminal, whole lines at most every 10 s
    on a pipe or log file (and always the last step).
    """

    def __init__(self, *, quiet: bool = False, interval: float = 1.0,
                 stream: TextIO | None = None, label: str = "train") -> None:
        self.quiet = quiet
        self.interval = interval
        self.stream = stream or sys.stderr
        self.label = label
        self.start = time.monotonic()
        self.first_step: int | None = None
        self._last_print = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, step: int, total: int, loss: float) -> str:
        """The progress text after ``step`` of ``total`` steps."""
        if self.first_step is None:
            self.first_step = step - 1
        elapsed = time.monotonic() - self.start
        done = step - self.first_step
        eta = f"{elapsed / done * (total - step):.0f} s" if done else "?"
        return (f"{self.label}: step {step}/{total} ({100 * step / max(total, 1):.0f}%) "
                f"loss {loss:.4f} ETA {eta}")

    def __call__(self, step: int, total: int, loss: float) -> None:
        """Report one finished step."""
        text = self.line(step, total, loss)
        now = time.monotonic()
        last = step == total
        if self.quiet or (not last and now - self._last_print < self.interval):
            return
        self._last_print = now
        if self._tty:
            print(f"\r{text}", end="\n" if last else "", file=self.stream, flush=True)
        else:
            self._last_print += max(0.0, 10.0 - self.interval)
            print(text, file=self.stream, flush=True)
