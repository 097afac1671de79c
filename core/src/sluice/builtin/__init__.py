"""Components shipped with core: the local file source and sink (JSON Lines by
default, ``jsonl`` as an alias), the ``jsonl`` format, and local checkpoints."""
