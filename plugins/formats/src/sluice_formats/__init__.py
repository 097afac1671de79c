"""Sluice file formats: ``parquet`` (pyarrow), ``csv`` and ``tsv``, for the ``file`` and ``s3``
sources and sinks (``format:``).

Nothing here imports pyarrow at module import; a format imports it when a job reads or writes.
"""

__version__ = "0.1.0"
