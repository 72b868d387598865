"""Benchmarks of the sci message tree on loopback: ``python -m bench.tree --hosts N``.

The bench process holds the tree's root; agents and simulated backends are real processes
forked from a server that has sci imported already, so that hundreds of them start in seconds.
"""
