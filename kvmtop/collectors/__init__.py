"""Collectors: I/O only. Each reads one source and returns raw counters.

Layer: collectors. Each takes a `root` path (default "/") so tests point it at fake
trees, and has `probe()` that says whether the source works and, if not, why.
Never imports textual or the views.
"""
