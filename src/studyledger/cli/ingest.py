"""Commands of the ingest area (registered on the ``studyledger`` group)."""

from __future__ import annotations
