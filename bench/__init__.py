"""Sluice benchmarks (``make bench``): throughput, memory and CPU per document, each beside a floor
measured in the same run. Never part of ``make test``."""
