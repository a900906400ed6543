"""Dated benchmark reports: what a benchmark printed, with the command and the machine.

Every benchmark ends its script with

    if __name__ == "__main__":
        from report import run_and_report
        sys.exit(run_and_report("backtest", main))

which runs main() as before, echoing its output, and, if it returns 0, writes
docs/benchmarks/<name>-<YYYY-MM-DD>.md: a title (the first line of the benchmark's
docstring), the command line, the machine (cores, CPU, memory, load, Python, commit) and
everything main() printed. A rerun on the same day replaces that day's report; figures
measured on another day stay in their own file, so a report never goes stale silently.

SPEECHOPS_REPORT_DIR writes the reports elsewhere; SPEECHOPS_REPORT=0 writes none (for
a quick or partial run whose figures should not become the record). Only a script run
writes a report: a test that imports a benchmark and calls main() writes nothing.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "docs" / "benchmarks"


class _Tee(io.TextIOBase):
    """Writes to the real stdout and keeps a copy."""

    def __init__(self, stream):
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def machine() -> dict[str, str]:
    """The facts a reader needs to compare two reports: cores, CPU, memory, load, software."""
    facts = {"cores": str(os.cpu_count()),
             "python": platform.python_version(),
             "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:"))
        facts["memory"] = f"{mem_kib / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        facts["load average (1 min, at start)"] = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit:
            facts["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def _portable(arg: str) -> str:
    """A path argument as the repository sees it: relative inside it, only its name
    outside it (a report never points at a file outside the repository)."""
    head, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if os.path.isabs(value):
        path = Path(value)
        value = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else f".../{path.name}"
    return f"{head}{sep}{value}"


def describe(doc: str | None) -> tuple[str, str]:
    """A benchmark's docstring -> (title: its first sentence, summary: its first paragraph)."""
    summary = " ".join((doc or "").strip().split("\n\n")[0].split())
    title = summary
    for stop in (": ", ". "):
        cut = title.find(stop)
        if 20 <= cut:
            title = title[:cut]
    return title.rstrip("."), summary


def render(name: str, output: str, *, title: str = "", summary: str = "", argv: list[str] | None = None,
           facts: dict[str, str] | None = None, when: dt.datetime | None = None,
           seconds: float | None = None) -> str:
    """The report's Markdown text."""
    when = when or dt.datetime.now(dt.timezone.utc)
    argv = [_portable(a) for a in (sys.argv if argv is None else argv)]
    if argv and argv[0].endswith(".py"):
        argv[0] = f"benchmarks/{Path(argv[0]).name}"
    lines = [f"# {name}: {title}" if title else f"# {name}", ""]
    if summary and summary.rstrip(".") != title:
        lines += [summary, ""]
    lines += [f"Measured {when:%Y-%m-%d %H:%M} UTC" + (f", {seconds:.0f} s." if seconds is not None else "."),
              "Written by the benchmark itself (`benchmarks/report.py`); the figures are as printed.", "",
              "```", "python3 " + shlex.join(argv), "```", "",
              "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in (facts if facts is not None else machine()).items()]
    lines += ["", "```", output.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def write(name: str, output: str, *, directory: Path | None = None, when: dt.datetime | None = None,
          **render_args) -> Path:
    """Writes docs/benchmarks/<name>-<YYYY-MM-DD>.md (UTC date) and returns its path."""
    when = when or dt.datetime.now(dt.timezone.utc)
    directory = Path(directory or os.environ.get("SPEECHOPS_REPORT_DIR") or DEFAULT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{when:%Y-%m-%d}.md"
    path.write_text(render(name, output, when=when, **render_args))
    return path


def run_and_report(name: str, main: Callable[..., int | None], *args) -> int:
    """Runs a benchmark's main(*args), echoing its output, and writes the report if it returns 0."""
    module = sys.modules.get(getattr(main, "__module__", ""), None)
    title, summary = describe(getattr(module, "__doc__", None))
    facts = machine()
    started = dt.datetime.now(dt.timezone.utc)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        rc = main(*args) or 0
    finally:
        sys.stdout = tee.stream
    if rc == 0 and os.environ.get("SPEECHOPS_REPORT", "1") != "0":
        seconds = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
        path = write(name, tee.copy.getvalue(), when=started, title=title, summary=summary, facts=facts,
                     seconds=seconds)
        print(f"report: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)
    return rc
