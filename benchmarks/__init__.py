"""Benchmarks of dpm_ppl beside a hand-written JAX version and a PyTorch peer (`python -m benchmarks`).

Not a part of the package: run from the repository root. See ``benchmarks/RESULTS.md``.
"""
