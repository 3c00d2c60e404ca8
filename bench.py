"""Benchmarks: `python bench.py --help`, `python bench.py input --help`; the code is in bench/ (see
bench/__init__.py), the figures and how each is computed in BENCHMARKS.md."""
from bench.cli import main

if __name__ == "__main__":
    main()
