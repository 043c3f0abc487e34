"""One-off studies behind the library's defaults: ``python -m bench.studies.<module>`` (bench/README.md)."""
