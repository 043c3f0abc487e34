"""The project's benchmarks and studies (not part of the installed library). Run them from the repository root as
modules, e.g. ``python -m bench.frontier --smoke``; bench/README.md lists every file and how to run it, and
bench/RESULTS.md says what was measured where."""
