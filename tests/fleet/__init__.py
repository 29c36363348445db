"""The multi-node drill (``make fleet``); not collected by ``make test``."""
