"""Simulator throughput: scenarios per second and hypothesis examples per second."""

from __future__ import annotations

from sim._explore import bench

from ._report import Table


def table(*, budget: float, examples: int) -> Table:
    """Time `sim` as `python -m sim bench` does, on this machine."""
    result = bench(budget=budget, examples=examples)
    out = Table(
        "Simulator throughput",
        ["what", "per second", "notes"],
    )
    for label, alone, checked, wakeups in result.loops:
        out.add(f"simulate(), {label} scenarios", f"{alone:,.0f}", f"{wakeups:.1f} wakeups each")
        out.add(f"simulate() + check_invariants(), {label}", f"{checked:,.0f}", "")
    rate = result.examples_per_second
    out.add(
        "hypothesis examples (generate, simulate, check)",
        f"{rate:,.0f}",
        f"10,000 examples in {10_000 / rate:.1f} s",
    )
    out.notes.append(
        "One process, one core; each simulation runs the production wait loop and the "
        "transitions machine on a virtual clock."
    )
    return out
