"""Load scenarios (Locust) against a production-like local stack: ``make load``."""
