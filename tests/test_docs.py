"""The docs are true: generated pages are fresh and every Python example runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```\s*$", re.S | re.M)


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


def _examples() -> list[object]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            name = f"{page.relative_to(ROOT)}:{line}"
            found.append(pytest.param(name, match.group(1), id=name))
    return found


EXAMPLES = _examples()


def test_docs_have_examples_to_run() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.real
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("where", "code"), EXAMPLES)
def test_docs_example_runs(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__docs_example__"})


def test_reliability_page_names_only_tests_that_exist() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    references = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", page)
    assert len(references) >= 30
    for path, name in references:
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} is gone"

