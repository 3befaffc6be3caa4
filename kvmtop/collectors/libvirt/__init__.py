"""The libvirt collector: one bulk stats call per tick over a read-only connection.

Layer: collectors (I/O). `collector` makes the calls; `connect` opens and describes
connections; `calls` runs the stats call on a thread of its own against a deadline;
`entries` remembers each domain between ticks.
"""
