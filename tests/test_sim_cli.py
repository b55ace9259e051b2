"""`python -m sim`: timelines, verdicts, summaries and exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from sim import load_scenarios
from sim._cli import main

ROOT = Path(__file__).resolve().parent.parent

PASSING = """
[[scenario]]
name = "killed after the grace"
timeout = 1.0
interrupt_grace = 0.5
child = { on_interrupt = "ignore" }

[scenario.expect]
termination = "timeout"
killed_at = 1.502
"""

FAILING = """
[[scenario]]
name = "wrong about the kill"
timeout = 1.0
interrupt_grace = 0.5
child = { on_interrupt = "ignore" }

[scenario.expect]
killed_at = 1.5
returncode = -2
"""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sim_run_the_shipped_scenarios_pass_in_a_subprocess() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sim", "run", "scenarios/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cases = sum(len(load_scenarios(p)) for p in (ROOT / "scenarios").glob("*.toml"))
    assert done.stdout.splitlines()[-1] == f"{cases} scenarios in 6 files: {cases} passed, 0 failed"
    assert done.stderr == ""


def test_sim_run_prints_an_aligned_timeline_and_a_verdict(tmp_path: Path) -> None:
    path = write(tmp_path, "pass.toml", PASSING)
    code, out = run("run", str(path))
    assert code == 0
    assert out.splitlines() == [
        f'== {path} #1 "killed after the grace"',
        "   timeout 1 s; grace 0.5 s; poll 0.05 s; event backend; "
        "token never cancelled; no abandon",
        "   child never exits; on SIGINT ignores it; on SIGKILL exits -9 after 0 s",
        "   t (s)  event           state        detail",
        "   0.000  start           running",
        "   1.000  wakeup          running      slice 1.000 s",
        "   1.001  wakeup          running      slice 0.001 s",
        "   1.001  soft_interrupt  terminating  SIGINT, reason timeout",
        "   1.501  wakeup          terminating  slice 0.500 s",
        "   1.502  wakeup          terminating  slice 0.001 s",
        "   1.502  hard_kill       killing      SIGKILL",
        "   1.502  · child exits                returncode -9",
        "   1.502  wakeup          killing      slice no limit, woken by the exit",
        "   1.502  exit            exited       returncode -9",
        "   PASS: returncode -9 at 1.502 s; SIGINT at 1.001 s, SIGKILL at 1.502 s; 5 wakeups",
        "",
        "1 scenarios in 1 files: 1 passed, 0 failed",
    ]


def test_sim_run_a_failed_expectation_exits_1_and_says_what_differs(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", PASSING)
    write(tmp_path, "b.toml", FAILING)
    code, out = run("run", "--quiet", str(tmp_path))
    assert code == 1
    assert out.splitlines() == [
        f'== {tmp_path / "a.toml"} #1 "killed after the grace"',
        "   PASS: returncode -9 at 1.502 s; SIGINT at 1.001 s, SIGKILL at 1.502 s; 5 wakeups",
        f'== {tmp_path / "b.toml"} #1 "wrong about the kill"',
        "   FAIL: returncode -9 at 1.502 s; SIGINT at 1.001 s, SIGKILL at 1.502 s; 5 wakeups",
        "     expected killed_at = 1.500, got 1.502",
        "     expected returncode = -2, got -9",
        "2 scenarios in 2 files: 1 passed, 1 failed",
    ]


def test_sim_run_a_malformed_file_exits_2_naming_file_scenario_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "good.toml", PASSING)
    bad = write(
        tmp_path,
        "bad.toml",
        '[[scenario]]\nname = "typo"\ntimeout = 1.0\nchild = { exit_att = 2 }\n',
    )
    code, out = run("run", str(good), str(bad))
    assert (code, out) == (2, "")  # nothing runs when any input is malformed
    assert capsys.readouterr().err == (
        f'sim: {bad}: scenario #1 "typo": unknown field child.exit_att '
        "(known: exit_at, exit_code, on_interrupt, on_kill)\n"
    )


def test_sim_run_a_malformed_file_in_a_subprocess_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.toml", '[[scenario]]\nname = "neg"\ninterrupt_grace = -1\n')
    done = subprocess.run(
        [sys.executable, "-m", "sim", "run", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f'sim: {bad}: scenario #1 "neg": interrupt_grace must be >= 0 seconds, got -1\n'
    )


def test_sim_run_reports_every_malformed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a.toml", "[[scenario]]\n")
    write(tmp_path, "b.toml", "not toml at all")
    assert run("run", str(tmp_path))[0] == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"sim: {tmp_path / 'a.toml'}: scenario #1: field name is required"
    assert err[1].startswith(f"sim: {tmp_path / 'b.toml'}: cannot read it: ")


@pytest.mark.parametrize("which", ["missing.toml", "empty-dir"])
def test_sim_run_a_missing_path_or_an_empty_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    (tmp_path / "empty-dir").mkdir()
    assert run("run", str(tmp_path / which))[0] == 2
    assert str(tmp_path / which) in capsys.readouterr().err


def test_sim_run_an_invariant_violation_fails_the_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is fine; the machine is not: the verdict names the invariant.
    import sim._cli
    from sim.mutants import MUTANTS

    broken = MUTANTS["non-strict-timeout"].machine
    real = sim._cli.simulate
    monkeypatch.setattr(sim._cli, "simulate", lambda s: real(s, machine=broken))
    path = write(tmp_path, "t.toml", '[[scenario]]\nname = "t"\ntimeout = 1.0\n')
    code, out = run("run", "-q", str(path))
    assert code == 1
    assert "     I4 at 1.000 s: interrupted for the timeout, which is not strictly past" in out


def test_sim_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("frobnicate")[0] == 2
    assert run("run")[0] == 2
    assert run("explore", "--examples", "0")[0] == 2
    assert run("explore", "--mutant", "nope")[0] == 2
    assert "no mutant 'nope'; choose from" in capsys.readouterr().err


def test_sim_explore_the_real_machine_finds_nothing() -> None:
    code, out = run("explore", "--examples", "50", "--seed", "3")
    assert code == 0
    assert out.splitlines() == [
        "exploring 50 generated scenarios on the real machine, seed 3",
        "no invariant violated",
    ]


def test_sim_explore_a_mutant_prints_a_minimal_counterexample_as_a_scenario_file(
    tmp_path: Path,
) -> None:
    code, out = run("explore", "--examples", "300", "--seed", "1", "--mutant", "non-strict-timeout")
    assert code == 1
    text = out.split("as a scenario file:\n\n", 1)[1].split("\n\n", 1)[0] + "\n"
    assert text == '[[scenario]]\nname = "counterexample"\ntimeout = 0.0\ninterrupt_grace = 0.0\n'
    assert "   I4 at 0.000 s: interrupted for the timeout, which is not strictly past" in out
    # It is a scenario file, ready to keep as a regression test.
    (case,) = load_scenarios(write(tmp_path, "found.toml", text))
    assert case.scenario.timeout == 0.0


def test_sim_explore_without_a_seed_prints_the_one_it_chose() -> None:
    code, out = run("explore", "--examples", "5")
    assert code == 0
    assert out.startswith("exploring 5 generated scenarios on the real machine, seed ")


def test_sim_bench_reports_rates(tmp_path: Path) -> None:
    path = write(tmp_path, "pass.toml", PASSING)
    code, out = run("bench", "--seconds", "0.05", "--examples", "20", str(path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("plain loop, scenarios/s:")
    assert lines[1].split()[0] == "generated"
    assert lines[2].split()[0] == "files"
    assert lines[2].split()[-1] == "5.0"  # wakeups of the one file scenario
    assert lines[3].startswith("hypothesis property run: ")
    assert lines[4].startswith("freezegun, simulate() with a callback: ")


def test_sim_explore_without_hypothesis_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # import hypothesis -> ImportError
    assert run("explore", "--examples", "5") == (2, "")
    assert (
        capsys.readouterr().err == "sim: explore needs hypothesis: pip install 'statewait[sim]'\n"
    )


@pytest.mark.parametrize(
    ("fields", "expect"),
    [
        ("cancel_at = 1e300\nchild = { on_interrupt = { exit_after = 0.5 } }", ""),
        ("child = { exit_at = 1e300 }", ""),
        ("child = { exit_at = 1.0 }", "elapsed = 1e300"),
    ],
    ids=["cancel-at-1e300", "exit-at-1e300", "expected-1e300"],
)
def test_sim_run_times_past_1e299_seconds_are_reported_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: str, expect: str
) -> None:
    # A duration near float's limit is valid seconds, but in nanoseconds it is
    # past float's range: every conversion back to seconds must stay exact ints.
    text = f'[[scenario]]\nname = "far"\n{fields}\n[scenario.expect]\n{expect}\n'
    code, out = run("run", str(write(tmp_path, "far.toml", text)))
    assert code == (1 if expect else 0), out
    assert capsys.readouterr().err == ""
    assert "1 scenarios in 1 files" in out.splitlines()[-1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--seconds", "nan"], "--seconds must be a finite number > 0, got nan"),
        (["--seconds", "inf"], "--seconds must be a finite number > 0, got inf"),
        (["--seconds", "-1"], "--seconds must be a finite number > 0, got -1.0"),
        (["--seconds", "0"], "--seconds must be a finite number > 0, got 0.0"),
        (["--examples", "0"], "--examples must be at least 1"),
        (["--examples", "-3"], "--examples must be at least 1"),
    ],
)
def test_sim_bench_a_bad_option_exits_2_without_running(
    capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    # NaN and inf used to loop for ever, a negative budget ran anyway, and
    # --examples 0 ended in hypothesis's traceback.
    assert run("bench", *argv) == (2, "")
    assert capsys.readouterr().err == f"sim: {problem}\n"


def test_sim_run_a_path_that_is_neither_file_nor_directory_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("run", "/dev/null")[0] == 2
    assert capsys.readouterr().err == (
        "sim: /dev/null: not a regular file or a directory of *.toml files\n"
    )
