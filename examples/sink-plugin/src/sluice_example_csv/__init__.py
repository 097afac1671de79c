"""An example third-party Sluice plugin: a ``csv`` sink (see ``plugin.py`` and ``sink.py``)."""
