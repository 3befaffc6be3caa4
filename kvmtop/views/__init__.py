"""Textual widgets and screens of kvmtop.

Layer: views. Widgets read `kvmtop.model.snapshot.Snapshot` values through a
`show(snapshot)` method and format them with `kvmtop.model.formatting`. They never import
collectors, the sampler, the store, the feed, libvirt or psutil (import-linter).
"""
