"""Zipping: when to bundle a record's files (policy), how (plan, worker), and repair of bundles."""
