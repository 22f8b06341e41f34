"""JSONL ingestion: line formats -> events, a tailer with committed offsets, a watcher.

Never imports the dashboard.
"""
