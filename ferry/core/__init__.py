"""The core: record model, errors, checksums, config, retries, atomic writes, a folder's files
and their remembered checksums (tree, tree_state). Imports nothing above it: no CLI, no stage."""
