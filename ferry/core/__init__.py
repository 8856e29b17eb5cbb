"""The core: record model, errors, checksums, config, retries. No CLI, no I/O policy."""
