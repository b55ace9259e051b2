"""statewait benchmarks: `python -m bench.scale` (many children at once)."""
