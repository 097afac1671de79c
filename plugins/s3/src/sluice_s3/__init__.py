"""Sluice S3 plugin: an S3 source, sink (also the dead-letter store), checkpoint store and staging
store, and the mapping of orchestrator connections onto S3 fields.

Nothing here imports boto3; the components import it when a job opens them.
"""

__version__ = "0.1.0"
