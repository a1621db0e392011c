"""Benchmark harness for SPEC §7: `python -m bench` or `bench/run.sh` (docs/PERFORMANCE.md)."""
