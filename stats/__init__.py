"""Structured run statistics: the event schema, the JSONL/CSV writers and the loaders."""
