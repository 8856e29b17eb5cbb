"""Local stand-ins on 127.0.0.1 for the demo and tests: XRootD, portal API, repository."""
