"""``sluice demo``: the main jobs on embedded servers (osmem-server for OpenSearch, moto for S3)."""
