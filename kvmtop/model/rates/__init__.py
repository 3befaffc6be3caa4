"""Rates: turn two raw samples into per-second figures, one module per domain.

Layer: model (pure). No I/O.

Rules (docs/sources.md#counters-and-rates):
- rate = Δcounter / Δt with Δt from the monotonic clock of the source;
- a counter that went backwards, a value missing on either side, or a guest whose
  identity changed (libvirt domain ID or QEMU pid) gives None ("unknown"), never 0;
- ratio metrics (latency per request) come from deltas over the same interval, and
  only when at least `min_ops` requests completed in it.

`counters` holds those rules; `cpu`, `kvm`, `disk` and `net` derive one guest's
devices and internals, `guest` puts them together, `host` the host baseline, and
`frame` derives a whole sample.
"""
