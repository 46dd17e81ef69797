"""The gateway's load and overhead benchmarks (``python -m bench --help``); see bench/README.md."""
