"""Audit tools: checkpoints, replay and as-of state, run diff, export, merge, recorded audits.

Everything here reads a ledger through the store, the projections and the query layer and
never imports the CLI or the dashboard.
"""
