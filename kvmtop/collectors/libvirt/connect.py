"""libvirt connections: importing the binding, opening a read-only connection and
describing it, telling a dead connection from a failed call.

Layer: collectors (I/O). libvirt-python is an optional extra, imported lazily.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kvmtop.collectors.base import CollectorError

LIBVIRT_MISSING = "libvirt-python not installed (pip install 'kvmtop[libvirt]')"
"""Probe reason when the optional libvirt binding cannot be imported."""

# Transports that reach another host even when the URI has no host part
# (libvirt "Connection URIs": driver[+transport]://[user@][host][:port]/path).
_REMOTE_TRANSPORTS = frozenset({"ssh", "libssh", "libssh2", "tcp", "tls"})


def import_libvirt() -> Any | None:
    """Import libvirt-python on first use; None when it is not installed.

    Also replaces libvirt's default error handler: virDefaultErrorFunc prints every
    error to stderr ("libvirt: XML-RPC error : ..."), which would scribble over the
    TUI. Errors still arrive as `libvirt.libvirtError` exceptions.
    """
    try:
        import libvirt
    except ImportError:
        return None
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)
    return libvirt


def _ignore_libvirt_error(_ctx: object, _error: object) -> None:
    """virErrorFunc that drops the message (the exception carries it)."""


def is_local_uri(uri: str) -> bool:
    """Whether a libvirt URI talks to this host.

    `qemu:///system`, `qemu:///session`, `qemu+unix:///system` and `test:///default`
    are local; a URI with a host (`qemu+ssh://host/system`, `qemu://host/system`) or
    a network transport is remote, and host-local facts (QEMU pid, /proc, debugfs)
    do not apply to its guests.
    """
    parts = urlsplit(uri)
    _, _, transport = parts.scheme.partition("+")
    return not parts.netloc and transport not in _REMOTE_TRANSPORTS


def format_version(number: int) -> str:
    """libvirt packs versions as major * 1,000,000 + minor * 1,000 + release."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def describe_libvirt_error(uri: str, message: str) -> str:
    """Turn a libvirt connection error message into a short sentence naming the URI."""
    lowered = message.lower()
    if "no such file or directory" in lowered and "socket" in lowered:
        return f"libvirt daemon not running for {uri} (socket missing: {message})"
    if "connection refused" in lowered:
        return f"libvirt daemon not running for {uri} (connection refused)"
    if "permission denied" in lowered or "access denied" in lowered:
        return f"permission denied opening {uri}: run as root or as a member of the libvirt group"
    if "authentication" in lowered:
        return f"authentication failed for {uri}: {message}"
    return f"libvirt at {uri} unreachable: {message}"


def open_read_only(
    lv: Any, uri: str | None, open_fn: Callable[[str | None], Any] | None = None
) -> tuple[Any, dict[str, str], str]:
    """`virConnectOpenReadOnly` (stats and XML need no write access) and what the
    daemon says about itself: the connection, its versions and its URI. `open_fn`
    opens a URI instead of `libvirt.openReadOnly` (tests). Changes nothing of the
    collector (it may run on a thread of its own)."""
    open_fn = open_fn if open_fn is not None else lv.openReadOnly
    shown = uri or "(default URI)"
    try:
        conn = open_fn(uri)
    except lv.libvirtError as exc:
        raise CollectorError(describe_libvirt_error(shown, error_message(exc))) from exc
    if conn is None:  # libvirt-python < 5 returned None instead of raising
        raise CollectorError(f"libvirt at {shown} unreachable: open failed")
    try:
        conn_uri: str = conn.getURI()
        hypervisor_type: str = conn.getType()
        versions = {
            "uri": conn_uri,
            # virConnectGetLibVersion: the daemon's libvirt (remote side).
            "libvirt": format_version(conn.getLibVersion()),
            # virGetVersion: the client library kvmtop is linked against.
            "libvirt_client": format_version(lv.getVersion()),
            "hypervisor": f"{hypervisor_type} {format_version(conn.getVersion())}",
            "hostname": conn.getHostname(),
        }
    except lv.libvirtError as exc:
        close_quietly(lv, conn)
        raise CollectorError(describe_libvirt_error(shown, error_message(exc))) from exc
    return conn, versions, conn_uri


def is_connection_error(lv: Any, exc: Any, conn: Any | None) -> bool:
    """Whether a failed call means the connection itself is gone.

    A daemon restart shows up as VIR_ERR_SYSTEM_ERROR ("End of file while reading
    data", "Broken pipe") or VIR_ERR_INTERNAL_ERROR from VIR_FROM_RPC ("client
    socket is closed"); `virConnectIsAlive` of `conn` (the connection the call went
    over) then reports 0.
    """
    code = exc.get_error_code()
    if code in (
        lv.VIR_ERR_SYSTEM_ERROR,
        lv.VIR_ERR_RPC,
        lv.VIR_ERR_NO_CONNECT,
        lv.VIR_ERR_INVALID_CONN,
    ):
        return True
    if exc.get_error_domain() == lv.VIR_FROM_RPC:
        return True
    try:
        return conn is None or not conn.isAlive()
    except lv.libvirtError:
        return True


def error_message(exc: Any) -> str:
    """The libvirt error message of a libvirtError (first line), or its str()."""
    message = exc.get_error_message() if hasattr(exc, "get_error_message") else None
    text = message if isinstance(message, str) and message else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def close_quietly(lv: Any, conn: Any) -> None:
    """`virConnectClose`, ignoring errors of an already-dead connection."""
    with contextlib.suppress(lv.libvirtError):
        conn.close()
