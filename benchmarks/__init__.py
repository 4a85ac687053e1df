"""Benchmarks: the collection's scripts side by side with the seed tutorials' code.

    python -m benchmarks --help
"""
