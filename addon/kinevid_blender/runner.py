"""Starting the user's ``kinevid`` from Blender, without blocking Blender's UI.

``KinevidProcess`` starts kinevid with ``subprocess.Popen`` (an argument list, never a shell),
reads its stdout and stderr on two daemon threads into a queue, and lets a modal operator poll
it from a timer: ``poll()`` returns the new lines and updates ``progress``/``stage``. kinevid
writes progress lines like ``IK: 120/600 frames (20%, 85.3/s)`` on stderr when it is not on a
terminal (inference/progress.py); errors as ``kinevid run: error: ...``. ``cancel()`` ends the
process group it started (kinevid's IK uses worker processes). Pure stdlib: no bpy.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .motion_file import find_result_file

__all__ = ["Progress", "parse_progress", "find_kinevid", "run_command", "export_command",
           "KinevidProcess", "RunnerError"]

_PROGRESS = re.compile(r"^(?P<label>[^:\r\n]{1,60}): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\S+)"
                       r"(?: \((?P<pct>\d+)%)?")
_ERROR = re.compile(r"^kinevid [\w-]+: error: (?P<msg>.*)$")


class RunnerError(RuntimeError):
    """kinevid cannot be started or failed: the message is for the user."""


@dataclass
class Progress:
    label: str
    done: int
    total: int
    unit: str

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 0.0


def parse_progress(line: str) -> Progress | None:
    m = _PROGRESS.match(line.strip())
    if not m:
        return None
    return Progress(m["label"].strip(), int(m["done"]), int(m["total"]), m["unit"])


def find_kinevid(preference: str = "") -> Path:
    """The kinevid executable: the preference (the executable itself, or a virtual environment
    / folder holding ``bin/kinevid`` or ``Scripts/kinevid.exe``), else ``kinevid`` on PATH."""
    candidates: list[Path] = []
    if preference:
        p = Path(os.path.expanduser(preference))
        if p.is_dir():
            for sub in ("bin/kinevid", "Scripts/kinevid.exe", "Scripts/kinevid", "kinevid",
                        "kinevid.exe"):
                candidates.append(p / sub)
        else:
            candidates.append(p)
        for c in candidates:
            if c.is_file() and os.access(c, os.X_OK):
                return c
        raise RunnerError(f"kinevid not found at {preference!r} (set its path in the add-on "
                          "preferences: the kinevid executable or its virtual environment)")
    found = shutil.which("kinevid")
    if found:
        return Path(found)
    raise RunnerError("kinevid is not on PATH: set its path in the add-on preferences")


def run_command(kinevid, video, output, height: float, mass: float, sex: str | None = None,
                model: str | None = None, extra: list[str] | tuple = ()) -> list[str]:
    """Argument list for ``kinevid run VIDEO --height H --mass M [--sex] [--model] -o OUT``."""
    if not (0.5 <= height <= 2.5):
        raise RunnerError(f"height {height:g} m is outside 0.5-2.5 m")
    if not (10 <= mass <= 300):
        raise RunnerError(f"mass {mass:g} kg is outside 10-300 kg")
    argv = [str(kinevid), "run", str(video), "--height", f"{height:g}", "--mass", f"{mass:g}"]
    if sex:
        argv += ["--sex", sex]
    if model:
        argv += ["--model", str(model)]
    return argv + list(extra) + ["-o", str(output)]


def export_command(kinevid, model, motion, output) -> list[str]:
    """Argument list for ``kinevid export-blender MODEL MOTION -o FILE``."""
    return [str(kinevid), "export-blender", str(model), str(motion), "-o", str(output)]


@dataclass
class KinevidProcess:
    argv: list[str]
    output: Path | None = None      # result folder (or file) to look in when done
    env: dict | None = None
    lines: list[str] = field(default_factory=list)
    progress: Progress | None = None
    error: str | None = None        # kinevid's own error line, when it printed one
    cancelled: bool = False
    _proc: subprocess.Popen | None = None
    _queue: "queue.Queue[tuple[str, str | None]]" = field(default_factory=queue.Queue)
    _open_streams: int = 0
    started_at: float = 0.0

    def start(self) -> "KinevidProcess":
        kwargs: dict = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # its own process group, so cancel reaches workers
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # progress lines arrive as they are written
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=env, text=True, encoding="utf-8", errors="replace",
                                          bufsize=1, **kwargs)
        except OSError as exc:
            raise RunnerError(f"cannot start {self.argv[0]}: {exc.strerror or exc}") from exc
        self.started_at = time.monotonic()
        self._open_streams = 2
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()
        return self

    def _pump(self, name: str, stream) -> None:
        try:
            for line in stream:
                self._queue.put((name, line.rstrip("\r\n")))
        finally:
            self._queue.put((name, None))

    def poll(self) -> list[str]:
        """New output lines since the last call (never blocks)."""
        new: list[str] = []
        while True:
            try:
                _, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
                continue
            new.append(line)
            p = parse_progress(line)
            if p is not None:
                self.progress = p
            m = _ERROR.match(line)
            if m:
                self.error = m["msg"]
        self.lines += new
        return new

    @property
    def running(self) -> bool:
        return self._proc is not None and (self._proc.poll() is None or self._open_streams > 0)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def status(self) -> str:
        """'running', 'done', 'failed' or 'cancelled'."""
        if self.running:
            return "running"
        if self.cancelled:
            return "cancelled"
        return "done" if self.returncode == 0 else "failed"

    def failure_message(self) -> str:
        """What to tell the user when kinevid failed: its error line, else its last output."""
        if self.error:
            return self.error
        tail = [l for l in self.lines if l.strip()][-3:]
        return (f"kinevid exited with status {self.returncode}"
                + (": " + " | ".join(tail) if tail else ""))

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop kinevid and its workers: SIGTERM to its process group, SIGKILL after grace."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self.cancelled = True
        try:
            if os.name == "posix":
                os.killpg(self._proc.pid, signal.SIGTERM)
            else:
                self._proc.terminate()
            self._proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            if os.name == "posix":
                os.killpg(self._proc.pid, signal.SIGKILL)
            else:
                self._proc.kill()
            self._proc.wait(timeout=grace_s)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int:
        """Block until kinevid ends (for scripts and tests; the add-on polls instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[0]} still running after {timeout} s")
            self.poll()
            time.sleep(0.02)
        self.poll()
        return int(self.returncode)

    def result(self) -> Path | None:
        """The motion file the run produced (in ``output``), or None."""
        return find_result_file(self.output) if self.output is not None else None


def python_module_command(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter (used to run kinevid from a source tree)."""
    return [sys.executable, "-m", module, *args]
