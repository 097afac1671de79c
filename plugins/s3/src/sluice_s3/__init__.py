"""Sluice S3 plugin: an S3 source, sink (also the dead-letter store) and checkpoint store.

Nothing here imports boto3; the components import it when a job opens them.
"""

__version__ = "0.1.0"
