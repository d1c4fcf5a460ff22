"""Benchmark harness used by bench/run.py."""
