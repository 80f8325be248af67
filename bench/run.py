"""``make bench`` and ``make bench-quick``: every figure, one at a time, and BENCHMARKS.md.

Run from the repository root::

    .venv/bin/python -m bench.run --quick                  # make bench-quick, under 60 s
    .venv/bin/python -m bench.run --write BENCHMARKS.md    # make bench, the full run
    .venv/bin/python -m bench.run --quick --figures 1,7    # some figures only

Each figure is a module of ``bench/`` with ``measure(quick, out_dir) -> Figure``
(``bench.figure``). They run in the order of their numbers, never two at once (they
measure CPU), and each prints its summary line as it finishes. A figure that raises is
reported as failed, with its error, and the run exits non-zero.

With ``--write FILE`` (full runs only) the machine, the commands, a table of where we
stand and each figure's text and plots are written into FILE between the lines
``<!-- bench:begin -->`` and ``<!-- bench:end -->``; the rest of the file (the analysis
written by hand) is kept as it is.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.common import exit_on_sigterm, load_average
from bench.figure import Figure

FIGURE_MODULES = {
    1: "bench.cpu_per_task",
    2: "bench.fanout",
    3: "bench.capacity",
    4: "bench.first_frame",
    5: "bench.latency",
    6: "bench.api_load",
    7: "bench.memory",
    8: "bench.worker_start",
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RESULTS_DIR = Path("bench/results")


@dataclass(frozen=True)
class Outcome:
    """One figure's run: its Figure, or the error that stopped it."""

    number: int
    elapsed_s: float
    figure: Figure | None = None
    error: str | None = None

    def line(self) -> str:
        if self.figure is None:
            return f"figure {self.number} FAILED ({self.elapsed_s:.1f} s): {self.error}"
        return f"figure {self.number} ({self.elapsed_s:.1f} s): {self.figure.summary}"


def run_figure(number: int, quick: bool, out_dir: Path) -> Outcome:
    started = time.monotonic()
    try:
        module = importlib.import_module(FIGURE_MODULES[number])
        figure = module.measure(quick, out_dir)
        if not isinstance(figure, Figure) or figure.number != number:
            raise TypeError(f"{FIGURE_MODULES[number]}.measure() returned {figure!r}")
    except Exception as exc:  # reported with its figure; the run goes on, and fails at the end
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return Outcome(number, time.monotonic() - started, error=error)
    return Outcome(number, time.monotonic() - started, figure=figure)


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    kernel: str
    python: str
    pyav: str
    aiortc: str
    ffmpeg: str

    @classmethod
    def this_one(cls) -> Machine:
        import aiortc
        import av

        cpu_model = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
        version = subprocess.run(
            ["ffmpeg", "-hide_banner", "-version"], capture_output=True, text=True, check=True
        ).stdout.split()
        return cls(
            cpu_model=cpu_model,
            cores=os.cpu_count() or 0,
            kernel=f"{platform.system()} {platform.release()}",
            python=platform.python_version(),
            pyav=av.__version__,
            aiortc=aiortc.__version__,
            ffmpeg=version[2] if len(version) > 2 else "unknown",
        )

    def describe(self) -> str:
        return (
            f"{self.cpu_model}, {self.cores} cores, {self.kernel}; Python {self.python}, "
            f"PyAV {self.pyav}, aiortc {self.aiortc}, ffmpeg {self.ffmpeg}"
        )


@dataclass(frozen=True)
class Run:
    outcomes: list[Outcome]
    machine: Machine
    command: str
    started_at: datetime
    elapsed_s: float
    load_at_start: str
    load_at_end: str


def markdown(run: Run, plots_relative_to: Path) -> str:
    """The block of BENCHMARKS.md between the markers."""
    when = run.started_at.strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for outcome in run.outcomes:
        figure = outcome.figure
        if figure is None:
            rows.append(f"| {outcome.number} | **failed**: {outcome.error} | | |")
            continue
        ratio = f"{figure.ratio:.2f}x" if figure.ratio is not None else "-"
        rows.append(
            f"| {figure.number}. {figure.title} | {figure.summary} | {ratio} | {figure.target} |"
        )
    parts = [
        BEGIN,
        "<!-- Written by `make bench` (bench/run.py): everything between these markers is "
        "replaced by the next run; write analysis outside them. -->",
        "",
        f"## Where we stand (full run of {when})",
        "",
        "| figure | measured, against its reference measured in the same run | ratio | target |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Machine: {run.machine.describe()}. Load average (1/5/15 min) at the start "
        f"{run.load_at_start}, at the end {run.load_at_end}; the run took "
        f"{run.elapsed_s / 60:.1f} min. CPU % = CPU seconds per wall-clock second, "
        "100 % = one core.",
        "",
        "Made by:",
        "",
        "```",
        "make bench-deps",
        f"make bench    # {run.command}",
        "```",
    ]
    for outcome in run.outcomes:
        figure = outcome.figure
        parts += ["", f"## {outcome.number}. {figure.title if figure else 'failed'}", ""]
        if figure is None:
            parts.append(f"This figure failed: `{outcome.error}`.")
            continue
        parts.append(figure.body.rstrip())
        for plot in figure.plots:
            relative = os.path.relpath(plot.resolve(), plots_relative_to.resolve())
            parts += ["", f"![{figure.title}]({relative})"]
    parts += ["", END]
    return "\n".join(parts)


def write_into(path: Path, block: str) -> None:
    """Replace the block between the markers of ``path``, keeping the rest of it."""
    if not path.exists():
        path.write_text(f"# Benchmarks\n\n{block}\n")
        return
    text = path.read_text()
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block to write into")
    path.write_text(text[:begin] + block + text[end + len(END) :])


def parse_figures(text: str) -> list[int]:
    numbers = sorted({int(n) for n in text.split(",") if n.strip()})
    unknown = [n for n in numbers if n not in FIGURE_MODULES]
    if unknown:
        raise argparse.ArgumentTypeError(f"no figure {unknown}; figures: {list(FIGURE_MODULES)}")
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows: make bench-quick")
    parser.add_argument(
        "--figures",
        type=parse_figures,
        default=list(FIGURE_MODULES),
        help="comma-separated figure numbers (default: all)",
    )
    parser.add_argument("--out", type=Path, help=f"where plots go (full runs: {RESULTS_DIR})")
    parser.add_argument("--write", type=Path, help="the Markdown file to write (full runs)")
    args = parser.parse_args()
    if args.quick and args.write:
        parser.error("--write takes a full run's numbers, not --quick's")
    exit_on_sigterm()
    # A quick run draws no plot worth keeping: anything it writes goes with its temp dir.
    scratch = tempfile.TemporaryDirectory(prefix="relaystream-bench-")
    out_dir = args.out or (Path(scratch.name) if args.quick else RESULTS_DIR)
    command = shlex.join([".venv/bin/python", "-m", "bench.run", *sys.argv[1:]])
    machine = Machine.this_one()
    load_at_start, started_at, started = load_average(), datetime.now(UTC), time.monotonic()
    mode = "quick" if args.quick else "full"
    print(f"{mode} run of figures {args.figures} on {machine.describe()}", flush=True)
    print(f"load average at the start: {load_at_start}", flush=True)
    outcomes = []
    with scratch:
        for number in args.figures:
            outcomes.append(run_figure(number, args.quick, out_dir))
            print(outcomes[-1].line(), flush=True)
    run = Run(
        outcomes,
        machine,
        command,
        started_at,
        time.monotonic() - started,
        load_at_start,
        load_average(),
    )
    failed = [o.number for o in outcomes if o.figure is None]
    print(
        f"{len(outcomes)} figures in {run.elapsed_s:.1f} s; "
        f"load average at the end: {run.load_at_end}"
    )
    if args.write:
        write_into(args.write, markdown(run, args.write.parent))
        print(f"written: {args.write}")
    if failed:
        sys.exit(f"failed: figure(s) {', '.join(map(str, failed))}")


if __name__ == "__main__":
    main()
