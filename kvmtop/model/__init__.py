"""Pure data model: raw samples, rates, the window and the snapshot views read.

Layer: model. No I/O; never imports textual, rich, libvirt, psutil or collectors.
"""
