"""The manual: man-page sections of `kvmtop --help` and of every `kvmtop COMMAND --help`.

Layer: commands (text only; never imports textual).

argparse writes each command's SYNOPSIS (usage) and OPTIONS from the parser; this
module adds DESCRIPTION, PRIVILEGES, FILES, EXIT STATUS and EXAMPLES, laid out for
`argparse.RawDescriptionHelpFormatter`. The privileges are those the collectors
meet (measured on Debian 12, Linux 6.x, as root and as `nobody`):

- /proc/PID/task/TID/schedstat and comm are world-readable (fs/proc/base.c:
  `ONE("schedstat", S_IRUGO, ...)`), so steal needs no privilege unless /proc is
  mounted with hidepid=; /proc/PID/fd needs ptrace access (root or the same user).
- debugfs (/sys/kernel/debug) and tracefs (/sys/kernel/tracing) are mode 0700 root.
- perf tracepoint events need CAP_PERFMON (Linux 5.8; CAP_SYS_ADMIN before) or
  kernel.perf_event_paranoid = -1 (kernel/events/core.c perf_allow_tracepoint).
- OVS's sockets in its run directory are mode 0750 root:root (Debian's packages).
- libvirt's read-only socket admits whom libvirtd's access policy admits
  (libvirtd.conf auth_unix_ro; polkit's org.libvirt.unix.monitor by default).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

WIDTH = 78
INDENT = "  "


@dataclass(frozen=True, slots=True)
class Manual:
    """The hand-written sections of one command's manual (paragraphs, pre-wrapped)."""

    privileges: str
    files: str
    exit_status: str
    examples: str


def _sources(tracing: str) -> str:
    """What each source needs, for the commands that collect on this host."""
    traced = (
        f"exits by reason     ({tracing}) tracefs (root) and perf tracepoint events:\n"
        "                    root or CAP_PERFMON, or kernel.perf_event_paranoid=-1\n"
        if tracing
        else ""
    )
    return (
        "Run as root for every column. As another user kvmtop uses the sources it may\n"
        "read and leaves the other cells blank (-), saying why; `kvmtop doctor` checks\n"
        "each source on this host and prints the setting to change. Per source:\n"
        "libvirt stats       a read-only connection to the URI: root, or whom libvirt's\n"
        "                    policy admits (polkit, or auth_unix_ro in libvirtd.conf)\n"
        "host baseline       nothing (/proc, /sys, rtnetlink qdisc statistics)\n"
        "vCPU steal, threads nothing: /proc/PID/task/TID/schedstat is world-readable\n"
        "                    (unless /proc is mounted with hidepid=)\n"
        "unmanaged KVM VMs   /proc/PID/fd of the VMM: root, or the VMM's own user\n"
        "KVM debugfs         root (/sys/kernel/debug is mode 0700); kvmtop mounts it if\n"
        "                    needed. Under kernel lockdown the counters are refused and\n"
        "                    libvirt's KVM statistics are used instead\n"
        f"{traced}"
        "Open vSwitch        root (OVSDB and ovs-vswitchd sockets, mode 0750)\n"
        "RTT probes (--rtt)  an ICMP socket: net.ipv4.ping_group_range admitting the\n"
        "                    user's group, else CAP_NET_RAW (raw socket); TCP probes to\n"
        "                    configured ports need nothing"
    )


_CONFIG = (
    "$XDG_CONFIG_HOME/kvmtop/config.toml (default ~/.config/kvmtop/config.toml)\n"
    "                    settings, detector thresholds; --config FILE replaces it"
)
_RECORDING_IN = (
    "No privilege beyond reading FILE (recordings are created with mode 0600, so\n"
    "the user who recorded it or root)."
)


def _recording_errors(also: str = "") -> str:
    """Exit status 2 of the commands that read a recording (StoreError, bad input;
    `_RULE`)."""
    return (
        "2  bad options, unusable config file, --from/--to not understood or --from\n"
        "   later than --to, or FILE missing, not a recording, from a newer kvmtop,\n"
        "   or damaged so that no sample in the range can be read (one line says\n"
        "   why; a damaged sample is otherwise skipped and named on standard error)"
        + (f";\n   or {also}" if also else "")
    )


# Decided in kvmtop.commands.main.main for every command (141 is its EXIT_PIPE), by one rule.
_RULE = (
    "Every command: 2 for unusable input (options, config file, a recording) and\n"
    "1 for an output that cannot be written (a file kvmtop writes, or standard\n"
    "output); each command's --help lists its own."
)
_STDOUT_FAILED = "1  standard output cannot be written (disk full)"
_STDOUT_CLOSED = (
    "141  standard output was closed early (`| head`): what a shell shows for a\n"
    "     process ended by SIGPIPE; nothing is printed"
)
_OUT_FAILED = (
    "1  OUT or standard output cannot be written: no such directory, a\n"
    "   directory, no permission, disk full, a symbolic link, another user's\n"
    "   file (a bad OUT is said before the work starts; an older OUT is left as\n"
    "   it was)"
)
_STDOUT_IS_FILE = (
    "with --batch, standard output is FILE itself,\n   also through a link (nothing is written)"
)
_OUT_FILE = (
    "OUT                 written with mode 0600 to a temporary file beside it,\n"
    "                    renamed to OUT once complete (a new file, or an older one\n"
    "                    of yours replaced); never through a symbolic link, never\n"
    "                    over another user's file"
)
_OUT_DIRECTORY = "Writing OUT: write access to its directory."
_OUT_IS_FILE = (
    "OUT (or standard output) is FILE itself, also\n   through a link (nothing is written)"
)


MANUALS: dict[str, Manual] = {
    "": Manual(
        privileges=_sources("detail screen"),
        files=(
            f"{_CONFIG}\n"
            "$XDG_CONFIG_HOME/kvmtop/themes/*.toml\n"
            "                    your themes (t cycles; schema in the shipped themes/)"
        ),
        exit_status=(
            "0  quit\n"
            "1  -c URI was given and libvirt cannot be opened there; with --batch,\n"
            "   standard output cannot be written (disk full)\n"
            "2  bad options or unusable config file\n"
            f"{_STDOUT_CLOSED}\n"
            f"{_RULE}"
        ),
        examples=(
            "kvmtop                                  live TUI on qemu:///system\n"
            "kvmtop -c qemu+ssh://host/system        another libvirt\n"
            "kvmtop --batch --count 5 --format json  five JSON lines, for scripts\n"
            "kvmtop record --help                    the manual of one command"
        ),
    ),
    "record": Manual(
        privileges=_sources("--trace") + "\nWriting FILE: write access to its directory.",
        files=(
            "FILE                the recording: SQLite, created with mode 0600 (it names\n"
            "                    guests and addresses), never through a symbolic link;\n"
            "                    an existing recording is continued (its mode kept), an\n"
            "                    empty file is taken and set to 0600 if it is yours\n"
            f"{_CONFIG}"
        ),
        exit_status=(
            "0  stopped by SIGTERM, SIGINT or --duration (the file is complete)\n"
            "1  -c URI cannot be opened; FILE cannot be created (no such directory,\n"
            "   no permission, read-only) or is a symbolic link or an empty file of\n"
            "   another user; or a write error (disk full): one line says how many\n"
            "   samples the file holds; they stay readable\n"
            "2  bad options, unusable config file, or FILE exists and is not a kvmtop\n"
            "   recording (or is from a newer kvmtop)"
        ),
        examples=(
            "kvmtop record -o host.kvmtop --max-size 2048 --max-age 168\n"
            "kvmtop record -o web.kvmtop --duration 600 --trace web1\n"
            "systemctl reload kvmtop-record   (SIGHUP: reopen after log rotation;\n"
            "                                  contrib/systemd/kvmtop-record.service)"
        ),
    ),
    "replay": Manual(
        privileges=_RECORDING_IN,
        files=f"FILE                a recording made by `kvmtop record`\n{_CONFIG}",
        exit_status=(
            f"0  quit, or the range was printed\n{_STDOUT_FAILED}, or the TUI ended on an\n"
            "   error (its traceback is printed)\n"
            f"{_recording_errors(_STDOUT_IS_FILE)}\n"
            f"{_STDOUT_CLOSED}"
        ),
        examples=(
            "kvmtop replay host.kvmtop --from 2026-11-26T05:18 --speed 4\n"
            "kvmtop replay host.kvmtop --follow        a recording still being written\n"
            "kvmtop replay host.kvmtop --batch --format json --from +10m --to +15m"
        ),
    ),
    "slice": Manual(
        privileges=f"{_RECORDING_IN}\n{_OUT_DIRECTORY}",
        files=(
            "FILE                the recording to copy from\n"
            "OUT                 the new recording, mode 0600; it must not exist"
        ),
        exit_status=(
            "0  OUT written\n"
            "1  OUT cannot be written: it exists, no such directory, no permission,\n"
            "   disk full, a symbolic link\n"
            f"{_recording_errors()}"
        ),
        examples="kvmtop slice host.kvmtop --from 05:10 --to 05:25 -o incident.kvmtop",
    ),
    "report": Manual(
        privileges=f"{_RECORDING_IN}\n{_OUT_DIRECTORY}",
        files=(
            "FILE                the recording\n"
            f"{_OUT_FILE}\n{_CONFIG}\n"
            "                    (the detector thresholds the report applies)"
        ),
        exit_status=(
            f"0  report written\n{_OUT_FAILED}\n"
            f"{_recording_errors('--step not > 0; or ' + _OUT_IS_FILE)}\n{_STDOUT_CLOSED}"
        ),
        examples=(
            "kvmtop report host.kvmtop                        text on standard output\n"
            "kvmtop report host.kvmtop --from +1h -o incident.html\n"
            "kvmtop report host.kvmtop --step 60 --format json"
        ),
    ),
    "reindex": Manual(
        privileges="Read and write access to FILE (its owner, or root).",
        files=(
            "FILE                the recording (its index is rewritten in place)\n"
            f"{_CONFIG}\n"
            "                    (the detector thresholds the index is built with)"
        ),
        exit_status=(
            "0  index rebuilt\n"
            "1  FILE cannot be written (read-only, no permission, disk full)\n"
            f"{_recording_errors()}"
        ),
        examples=("kvmtop reindex host.kvmtop               then: kvmtop report host.kvmtop"),
    ),
    "export": Manual(
        privileges=f"{_RECORDING_IN}\n{_OUT_DIRECTORY}",
        files=f"FILE                the recording\n{_OUT_FILE}\n{_CONFIG}",
        exit_status=(
            f"0  exported\n{_OUT_FAILED}\n{_recording_errors(_OUT_IS_FILE)}\n{_STDOUT_CLOSED}"
        ),
        examples=(
            "kvmtop export host.kvmtop --format csv -o host.csv\n"
            "kvmtop export host.kvmtop --format openmetrics --from +10m --to +20m"
        ),
    ),
    "serve": Manual(
        privileges=(
            _sources("") + "\nListening: any user, on a port >= 1024 (default 9177). The endpoint\n"
            "has no authentication: it binds loopback unless --listen says otherwise."
        ),
        files=f"{_CONFIG}\n                    (interval and thresholds of the findings)",
        exit_status=(
            "0  stopped by SIGTERM or SIGINT\n"
            "1  the address cannot be bound\n"
            "2  bad options or unusable config file"
        ),
        examples=(
            "kvmtop serve                               http://127.0.0.1:9177/metrics\n"
            "kvmtop serve --listen 10.0.0.5:9177 -d 5   a private address, every 5 s\n"
            "kvmtop serve --replay rec.kvmtop --host h2  a recording served as host h2\n"
            "contrib/systemd/kvmtop-serve.service, contrib/prometheus/ (scrape, alerts)"
        ),
    ),
    "fleet": Manual(
        privileges="None: it reads Prometheus's HTTP API, not the host.",
        files="none (the Prometheus URL is an option)",
        exit_status=(
            "0  the table or JSON written, or the screen closed\n"
            "1  Prometheus unreachable or its answer unusable\n"
            "2  bad options"
        ),
        examples=(
            "kvmtop fleet --prometheus http://prom:9090  the screen, worst hosts first\n"
            "kvmtop fleet --prometheus http://prom:9090 -b  the table, once\n"
            "kvmtop fleet --prometheus http://prom:9090 --sort steal -b --format json"
        ),
    ),
    "doctor": Manual(
        privileges=(
            "None to run: it reports what the current user may not read. Run it as the\n"
            "user kvmtop will run as (root checks everything). Measuring kvm:kvm_exit\n"
            "(--measure) needs what exits by reason need: root or CAP_PERFMON."
        ),
        files=f"{_CONFIG}\n                    (the overcommit thresholds of the advice)",
        exit_status=(
            "0  every required source works (warnings may remain)\n"
            "1  a required source is unusable: host /proc, or libvirt when -c URI\n"
            "   was given; or standard output cannot be written (disk full)\n"
            "2  bad options or unusable config file\n"
            f"{_STDOUT_CLOSED}"
        ),
        examples=(
            "kvmtop doctor\n"
            "kvmtop doctor --format json --measure 0     no 1 s exit measurement\n"
            "kvmtop -c qemu+ssh://host/system doctor     exit 1 if it cannot connect"
        ),
    ),
    "completion": Manual(
        privileges="None.",
        files=(
            "bash: /usr/share/bash-completion/completions/kvmtop, or source it\n"
            "zsh:  _kvmtop in a directory on $fpath (before compinit), or eval it\n"
            "      (after compinit)\n"
            "fish: ~/.config/fish/completions/kvmtop.fish"
        ),
        exit_status=f"0  script printed\n{_STDOUT_FAILED}\n2  bad options\n{_STDOUT_CLOSED}",
        examples=(
            "kvmtop completion bash > /usr/share/bash-completion/completions/kvmtop\n"
            "source <(kvmtop completion bash)                       in ~/.bashrc\n"
            'kvmtop completion zsh > "${fpath[1]}/_kvmtop"\n'
            'eval "$(kvmtop completion zsh)"                        in ~/.zshrc\n'
            "kvmtop completion fish > ~/.config/fish/completions/kvmtop.fish"
        ),
    ),
}


def section(title: str, body: str) -> str:
    """A man-page section: the title, then the body indented."""
    return f"{title}\n{textwrap.indent(body, INDENT)}"


def description(text: str | None) -> str | None:
    """The DESCRIPTION section for argparse's `description` (wrapped: the raw
    formatter prints it as is)."""
    if not text:
        return None
    return section("DESCRIPTION", textwrap.fill(" ".join(text.split()), WIDTH - len(INDENT)))


def epilog(command: str, notes: str | None = None) -> str:
    """The sections after the options: NOTES (a module's own epilog, wrapped),
    PRIVILEGES, FILES, EXIT STATUS, EXAMPLES."""
    parts = []
    if notes:
        parts.append(section("NOTES", textwrap.fill(" ".join(notes.split()), WIDTH - len(INDENT))))
    manual = MANUALS.get(command)  # every command has one (a test checks)
    if manual is not None:
        parts += [
            section("PRIVILEGES", manual.privileges),
            section("FILES", manual.files),
            section("EXIT STATUS", manual.exit_status),
            section("EXAMPLES", manual.examples),
        ]
    return "\n\n".join(parts)
