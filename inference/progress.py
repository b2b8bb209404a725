"""Progress display for long work.

Library functions take a ``progress(done, total)`` callable and know nothing about terminals;
this is the terminal side. On a TTY it redraws one line; in a log (CI, a subprocess pipe read by
the Blender add-on) it prints a line at every 10 % so the log stays short and parseable.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, unit: str = "items", stream: TextIO | None = None, width: int = 30):
        self.label, self.unit, self.width = label, unit, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._t0 = time.perf_counter()
        self._last_decile = -1
        self._last_draw = 0.0

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def update(self, done: int, total: int) -> None:
        total = max(int(total), 1)
        done = min(max(int(done), 0), total)
        frac = done / total
        elapsed = time.perf_counter() - self._t0
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            now = time.perf_counter()
            if done < total and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            fill = int(round(frac * self.width))
            bar = "#" * fill + "-" * (self.width - fill)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {self.unit} ({rate:.1f}/s)")
        else:
            decile = int(frac * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(f"{self.label}: {done}/{total} {self.unit} ({100 * frac:.0f}%, {rate:.1f}/s)\n")
        self.stream.flush()
