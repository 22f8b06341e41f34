"""Commands of the demo area (registered on the ``studyledger`` group)."""

from __future__ import annotations
