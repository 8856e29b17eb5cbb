"""dataferry: move scientific dataset records between repositories and prove every byte arrived."""

__version__ = "0.1.0"
