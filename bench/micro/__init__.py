"""pytest-benchmark microbenchmarks, not part of the test suite:
``python -m pytest bench/micro/<file> --benchmark-only`` (bench/README.md)."""
