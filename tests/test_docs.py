"""The generated docs pages are up to date."""

from __future__ import annotations

import importlib.util
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
