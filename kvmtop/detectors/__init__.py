"""Detectors: pure functions of the window and settings that return findings.

Layer: detectors. No I/O; never imports textual, libvirt, psutil or collectors.
"""
