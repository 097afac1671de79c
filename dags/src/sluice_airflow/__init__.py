"""Airflow adapter for Sluice: every job file becomes a DAG whose tasks call the staged-run steps
of ``sluice.stages`` (``plan → extract → transform → load → finalize``, or ``plan → run →
finalize`` for a fused job).

- ``factory``: job files → DAGs, timetables, task mapping, broken job files (imports Airflow;
  used by ``dags/sluice_dags.py``).
- ``connections``, ``plugin``: Airflow connections for ``connection:`` and
  ``secret('airflow:...')``; the component plugins map them onto their own fields.

Importing this package (or its plugin module) does not import Airflow.
"""

__version__ = "0.1.0"
