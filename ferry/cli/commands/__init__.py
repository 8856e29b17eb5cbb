"""One module per ``ferry`` sub-command; each exposes ``register(subparsers, common)``."""
