"""What one benchmark figure hands to ``make bench``: its numbers, its reference, its plots.

Each figure module in ``bench/`` exposes ``measure(quick: bool, out_dir: Path) -> Figure``.
``quick`` is ``make bench-quick`` (every figure together under 60 s, so a few seconds
each); otherwise it is the full run whose tables and plots go into BENCHMARKS.md.
Every reference is measured in the same call as the figure it is compared with.
``run_alone`` is each module's ``python -m bench.<module> [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import exit_on_sigterm


@dataclass(frozen=True)
class Figure:
    number: int  # its place in BENCHMARKS.md (1 = CPU per task ... 7 = memory)
    title: str  # "CPU per task against the ffmpeg CLI"
    # The one line ``make bench-quick`` prints: what was measured, against what, and,
    # where there is a reference, ending with the ratio, e.g. "... 3.1 % vs 2.0 %: 1.55x".
    summary: str
    ratio: float | None  # measured / reference, None where no reference applies
    target: str  # the target, as text: "<= 1.5x ffmpeg"
    body: str = ""  # Markdown for BENCHMARKS.md: the table, what it means
    plots: list[Path] = field(default_factory=list)  # PNGs written under out_dir


def run_alone(measure: Callable[[bool, Path], Figure], description: str) -> None:
    """What ``python -m bench.<figure> [--quick]`` does: measure, print the summary line
    and the body, and leave the plots in ``--out`` (a temporary directory by default)."""
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="the make bench-quick variant")
    parser.add_argument("--out", type=Path, help="where the plots go")
    args = parser.parse_args()
    with ExitStack() as stack:
        out_dir = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out_dir.mkdir(parents=True, exist_ok=True)
        figure = measure(args.quick, out_dir)
        print(figure.summary)
        print()
        print(figure.body)
        for plot in figure.plots:
            print(f"plot: {plot}" + ("" if args.out else " (deleted on exit: use --out)"))
