"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations
