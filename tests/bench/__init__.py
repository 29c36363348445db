"""Benchmarks (``make bench``): measured on real PostgreSQL and Redis, never in the test suite.

See ``runner.py`` for the contract every ``bench_<x>.py`` module follows.
"""
