"""kvmtop: a live, recordable monitor for KVM hypervisor hosts.

The package root stays import-light: it never imports the TUI, so headless paths
(`kvmtop record`, `--batch`, `report`) start fast and run without a terminal.
"""

__version__ = "0.1.0"
