"""Figure builders and notebooks for post-run analysis of dataferry stats (see README.md)."""
