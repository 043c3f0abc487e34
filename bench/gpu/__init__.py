"""Scripts for a CUDA GPU (each with a CPU ``--smoke`` check): ``python -m bench.gpu.<module>`` (bench/README.md)."""
