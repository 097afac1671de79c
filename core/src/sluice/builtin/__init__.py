"""Components shipped with core: the local JSON Lines source and sink, and local checkpoints."""
