"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations

from sluice import hookimpl


@hookimpl
def sluice_transforms() -> list[type]:
    """Every transform of this plugin (``http_enrich`` lives in sluice-http)."""
    from .aggregate import Aggregate
    from .casting import Cast
    from .computed import Set
    from .dedup import Dedup
    from .filtering import Filter
    from .ordering import Sort
    from .reshape import Drop, Flatten, Rename, Select, Unflatten
    from .sampling import Sample
    from .user_code import Python

    return [Filter, Rename, Select, Drop, Cast, Set, Flatten, Unflatten, Python, Dedup, Aggregate, Sort, Sample]
