"""What one benchmark figure hands to ``make bench``: its numbers, its reference, its plots.

Each figure module in ``bench/`` exposes ``measure(quick: bool, out_dir: Path) -> Figure``.
``quick`` is ``make bench-quick`` (every figure together under 60 s, so a few seconds
each); otherwise it is the full run whose tables and plots go into BENCHMARKS.md.
Every reference is measured in the same call as the figure it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
