"""sluice-postgres: a PostgreSQL sink (COPY; append, upsert, replace_interval; exactly once) and a
parallel, resumable source. Importing this package imports no client library."""
