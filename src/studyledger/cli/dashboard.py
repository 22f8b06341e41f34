"""Commands of the dashboard area (registered on the ``studyledger`` group)."""

from __future__ import annotations
