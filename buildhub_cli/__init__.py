"""buildhub: BuildHub's command-line client for CI pipelines (see ``buildhub --help``)."""

__version__ = "0.1.0"
