"""What `make bench` writes into BENCHMARKS.md: its own block, and nothing else.

The measurements themselves are not tested here (figures come only from bench/ runs);
this is the report around them: hand-written analysis outside the markers survives a
run, a failed figure shows as failed, and a file without markers is left alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench.figure import Figure
from bench.run import BEGIN, END, Machine, Outcome, Run, markdown, write_into

MACHINE = Machine(
    cpu_model="Test CPU",
    cores=2,
    kernel="Linux 6.0",
    python="3.11.7",
    pyav="18.1.0",
    aiortc="1.16.0",
    ffmpeg="5.1.9",
)


def a_run(tmp_path: Path) -> Run:
    plot = tmp_path / "results" / "cpu.png"
    figure = Figure(
        number=1,
        title="CPU per task against the ffmpeg CLI",
        summary="remux 6.0 % vs 2.0 %: 3.00x",
        ratio=3.0,
        target="remux <= 1.5x ffmpeg",
        body="the table",
        plots=[plot],
    )
    return Run(
        outcomes=[
            Outcome(1, 20.0, figure=figure),
            Outcome(3, 0.1, error="ModuleNotFoundError: No module named 'bench.capacity'"),
        ],
        machine=MACHINE,
        command=".venv/bin/python -m bench.run --write BENCHMARKS.md",
        started_at=datetime(2026, 11, 30, 6, 0, tzinfo=UTC),
        elapsed_s=600.0,
        load_at_start="0.10 0.20 0.30",
        load_at_end="1.00 0.50 0.40",
    )


def test_a_run_replaces_only_its_block(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    target.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN}\nold numbers\n{END}\n\n## Analysis\n")

    write_into(target, markdown(a_run(tmp_path), tmp_path))

    text = target.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n")
    assert text.endswith(f"{END}\n\n## Analysis\n")
    assert "old numbers" not in text
    row = "| 1. CPU per task against the ffmpeg CLI | remux 6.0 % vs 2.0 %: 3.00x | 3.00x |"
    assert row in text
    assert "![CPU per task against the ffmpeg CLI](results/cpu.png)" in text
    assert "Test CPU, 2 cores, Linux 6.0; Python 3.11.7, PyAV 18.1.0" in text
    assert "at the start 0.10 0.20 0.30, at the end 1.00 0.50 0.40" in text
    assert "make bench    # .venv/bin/python -m bench.run --write BENCHMARKS.md" in text
    assert "| 3 | **failed**: ModuleNotFoundError" in text


def test_a_file_without_markers_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\nall written by hand\n")

    with pytest.raises(SystemExit, match="no <!-- bench:begin -->"):
        write_into(target, markdown(a_run(tmp_path), tmp_path))

    assert target.read_text() == "# Benchmarks\n\nall written by hand\n"
