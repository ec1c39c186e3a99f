"""A frozen copy of the GAF barrier solver as it was before issue 33 (git d75cc52:
kernel_ext/graphs/{barrier,laplacian,problem,cut}.py, imports made absolute), kept only as the
reference the length benchmarks (tests/benchmarks/test_bench_gaf_length.py) compare against.
Not part of the package; never imported by it."""
from .barrier import barrier_max_flow

__all__ = ["barrier_max_flow"]
