"""Hypothesis profiles for the whole suite.

`python -m pytest` runs the "ci" profile: derandomized (the same examples on
every run, so a property test is never flaky) and a moderate number of
examples, so the suite stays quick. HYPOTHESIS_PROFILE=thorough runs many
more, randomized, and keeps failures in the local example database.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=10_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
