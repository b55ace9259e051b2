"""statewait's benchmarks against its peers, measured in one run.

Run ``python -m bench`` (``--quick`` for a smoke run). Every figure is
reported beside the peers measured in the same run, as ratios; nothing here
is asserted by the test suite except that it runs.
"""
