"""Commands of the audit area (registered on the ``studyledger`` group)."""

from __future__ import annotations
