"""The docs pages are up to date: the generated page, the examples that run."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_state_machine_page_matches_a_fresh_generation() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_state_machine", ROOT / "scripts" / "gen_state_machine.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "docs" / "state-machine.md").read_text(encoding="utf-8")
    assert committed == module.render(), "run: python scripts/gen_state_machine.py"


def test_simulator_page_examples_run() -> None:
    page = (ROOT / "docs" / "simulator.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "docs/simulator.md", "exec"), {"__name__": "docs_example"})
