# How the simulator writes times: one place, so that a timeline, a verdict and
# a violation print the same instant the same way.

from __future__ import annotations

from statewait._options import NS_PER_SECOND

__all__ = ["decimals_for", "seconds"]


def seconds(ns: int, decimals: int | None = None) -> str:
    """Nanoseconds as seconds: "1.001", "0.000", "1.0005" (at least 3 decimals).

    Args:
        ns: the instant or duration in nanoseconds.
        decimals: exactly this many decimals; by default as many as needed
            (3 to 9), so that no digit is lost and none is noise.
    """
    if decimals is not None:
        return f"{ns / NS_PER_SECOND:.{decimals}f}"
    text = f"{ns / NS_PER_SECOND:.9f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(3, '0')}"


def decimals_for(instants: list[int]) -> int:
    """The fewest decimals (3, 6 or 9) that show every instant exactly."""
    for decimals, unit in ((3, 1_000_000), (6, 1_000)):
        if all(ns % unit == 0 for ns in instants):
            return decimals
    return 9
