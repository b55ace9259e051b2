"""The docs are true: generated pages are fresh and every Python example runs."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
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


_CONSOLE = re.compile(r"^```console\n(.*?)^```\s*$", re.S | re.M)


def _console_sessions() -> list[object]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _CONSOLE.finditer(text):
            if "^C" in match.group(1):
                continue  # a Ctrl-C typed at a terminal: shown, not replayable
            line = text.count("\n", 0, match.start()) + 2
            name = f"{page.relative_to(ROOT)}:{line}"
            found.append(pytest.param(match.group(1), id=name))
    return found


@pytest.mark.real
@pytest.mark.timeout(120)
@pytest.mark.parametrize("session", _console_sessions())
def test_docs_console_session_replays(session: str, tmp_path: Path) -> None:
    """Each `$ command` runs; its output and `echo $?` must read as shown."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    status = 0
    command: str | None = None
    expected: list[str] = []

    def check() -> int:
        if command is None:
            return status
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert (done.stdout + done.stderr).splitlines() == expected, command
        return done.returncode

    for line in session.splitlines():
        if line.startswith("$ echo $?"):
            status = check()
            command, expected = None, []
            continue
        if line.startswith("$ "):
            status = check()
            command, expected = line[2:], []
            continue
        if command is None:  # the output of `echo $?`
            assert line == str(status), f"exit status {status}, the page says {line}"
        else:
            expected.append(line)
    check()


def test_api_page_lists_every_public_name() -> None:
    import sim
    import statewait
    import statewait.aio

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+- (\w+)$", page, re.M))
    public = (set(statewait.__all__) | set(statewait.aio.__all__) | set(sim.__all__)) - {
        "__version__"
    }
    assert public <= listed, sorted(public - listed)
