"""Fault drills with real processes (``make chaos``); not collected by ``make test``."""
