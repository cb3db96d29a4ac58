"""One progress line for a whole run: blocks done / total, megapixels per second, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts finished blocks and prints at most every ``interval`` seconds (to stderr)."""

    def __init__(
        self, total: int, megapixels: float, *, quiet: bool = False, interval: float = 1.0,
        stream: TextIO | None = None, stall_after: float = 600.0,
    ) -> None:
        self.total = total
        self.megapixels = megapixels
        self.quiet = quiet
        self.interval = interval
        self.stream = stream or sys.stderr
        self.stall_after = stall_after
        self.done = 0
        self.start = time.monotonic()
        self._last_print = 0.0
        self._last_done_at = self.start
        self.stalled = False

    def advance(self, n: int = 1) -> None:
        """Record ``n`` finished blocks."""
        self.done += n
        self._last_done_at = time.monotonic()
        self.stalled = False
        self._print(force=self.done == self.total)

    def check_stall(self) -> bool:
        """Report (once) when no block finished for ``stall_after`` seconds; returns whether so."""
        idle = time.monotonic() - self._last_done_at
        if idle >= self.stall_after and not self.stalled:
            self.stalled = True
            if not self.quiet:
                print(
                    f"\nwarning: no block finished for {idle:.0f} s "
                    f"({self.done}/{self.total} done); workers may be stuck or lost",
                    file=self.stream, flush=True,
                )
        return self.stalled

    def line(self) -> str:
        """The current progress text."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        frac = self.done / self.total if self.total else 1.0
        rate = self.megapixels * frac / elapsed
        eta = elapsed * (1 - frac) / frac if frac else float("nan")
        eta_text = f"{eta:.0f} s" if frac else "?"
        return (
            f"segment: {self.done}/{self.total} blocks ({100 * frac:.0f}%) "
            f"{rate:.2f} MP/s ETA {eta_text}"
        )

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self._last_print < self.interval):
            return
        self._last_print = now
        end = "\n" if self.done == self.total else ""
        print(f"\r{self.line()}", end=end, file=self.stream, flush=True)
