"""The benchmark runs (with tiny counts) and writes its page; no speed is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_run_prints_every_table_and_writes_markdown(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for title in (
        "Exit detection latency",
        "Cancellation latency",
        "Timeout accuracy",
        "Idle cost",
        "Scale: 20 concurrent children",
        "Simulator throughput",
    ):
        assert title in done.stdout
        assert f"### {title}" in out.read_text()
    assert "statewait pidfd" in done.stdout or "statewait waitid" in done.stdout
    assert "Popen.wait() (blocking)" in done.stdout
