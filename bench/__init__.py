"""Benchmarks run by hand (``python -m bench.<name>`` from the repository root); see README."""
