#!/usr/bin/env python3
"""The nested lab: a real SVM KVM host (L1) inside TCG, with its own libvirtd and L2 guests.

This machine's /dev/kvm is PVM, which runs no stock Linux kernel, so the main lab's
Linux guests run under TCG. An operator's host is VMX or SVM. QEMU's TCG emulates
SVM with nested paging (`-cpu qemu64,+svm,+npt`), so a Debian guest booted under TCG
loads `kvm_amd` and is an ordinary SVM KVM host: lockdown `none`, debugfs counters
readable, `kvm:kvm_exit` firing with SVM reasons. That guest (L1) runs its own
libvirtd and the lab's `kvm` scenario, whose Linux guests (L2) run under L1's KVM,
and kvmtop and its tests run inside L1 from this checkout.

    nested.py build            the L1 image (cached by the hash of its inputs)
    nested.py up               build if needed, boot L1, copy the checkout and the
                               lab's guest build in, `tests/lab/lab up kvm` inside L1
    nested.py test [ARGS]      copy the checkout again and run `pytest -m nested ARGS`
                               inside L1 (exit status of pytest)
    nested.py ssh [CMD ...]    a shell (or CMD) on L1 as root
    nested.py status           is L1 running, its port, its guests
    nested.py down             stop L1 and remove its disk overlay (the image stays)

Called by `tests/lab/lab up nested`, `lab nested ...` and `lab down`. Standard
library only: it runs with the host's /usr/bin/python3 before any virtualenv.

The image: mmdebstrap of Debian 12 (the same release as this host, so L1 runs the
same QEMU 7.2 and libvirt 9.0 an operator of such a host runs) with the kernel,
libvirt, QEMU, Python and sshd, booted from an ext4 image through the kernel's own
initramfs, PID 1 busybox `init` (no systemd: the lab starts its daemons by hand, as
on this host), a copy-on-write overlay per boot. Why mmdebstrap rather than an
initramfs carrying ldd-copied binaries: libvirtd needs its users, configuration,
polkit-free sockets, firmware and dozens of libraries laid out as its package lays
them out; a Debian root file system is what an operator's host has, and apt
resolves it. kvmtop's Python dependencies come from wheels built on this host by the
project's virtualenv (pinned to the versions it runs), because L1 reaches PyPI only
through the host.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
L1_FILES = HERE / "l1"
STATE = Path(os.environ.get("KVMTOP_LAB_DIR", "/var/lib/kvmtop-lab"))
IMAGE_DIR = STATE / "nested-image"  # kept by `lab down`, like the guest build
RUN_DIR = STATE / "nested-run"  # removed by `down`

SUITE = "bookworm"
# With its updates and security fixes, as an operator's host is kept.
SOURCES = [
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
]
# What L1 needs to be an ordinary libvirt/KVM host and to run the lab and kvmtop.
# libvirt-daemon-system-sysv is named so apt does not pick the systemd flavour (PID 1
# here is busybox init either way). python3-libvirt and python3-psutil are Debian's
# builds of libvirt-python 9.0 and psutil 5.9 (the venv sees them).
PACKAGES = [
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "busybox-static",
    "procps",
    "iproute2",
    "openssh-server",
    "qemu-system-x86",
    "qemu-utils",
    "libvirt-daemon-system",
    "libvirt-daemon-system-sysv",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "dnsmasq-base",
    "python3",
    "python3-venv",
    "python3-libvirt",
    "python3-psutil",
]
# kvmtop's own dependencies (pyproject.toml) less those Debian provides, and what the
# tests import.
WHEELS = [
    "textual",
    "rich",
    "python-ptrace",
    "prometheus-client",
    "zstandard",
    "msgspec",
    "pytest",
    "pytest-asyncio",
    "hypothesis",
]
VENV = "/opt/kvmtop"
IMAGE_SIZE = "6G"  # sparse; L2 disks and logs go to the per-boot overlay

# L1's machine: TCG with SVM and nested paging, 4 GiB for the `kvm` scenario's ten L2
# guests, and one vCPU. With two (one TCG thread each), L1 failed in three of five
# runs under QEMU 10.0 as under 7.2: a kernel panic ("corrupted stack end detected
# inside scheduler") while L2 guests booted, and both L1 CPUs stuck in L2 guest mode
# ("soft lockup", RCU stalls) after vCPUs pinned together spun at 100 %. What these
# share is one emulated CPU pulling the other out of guest mode (an IPI, a timer
# interrupt), which one vCPU never needs. It costs the second host core: the lab
# then takes about half of L1's CPU (measured 51 %), and L2 boots in about 4 minutes.
L1_CPU = "qemu64,+svm,+npt"
L1_SMP = 1
# One TCG thread per vCPU (multi-threaded TCG). Measured: with a single thread for
# both vCPUs, the L2 Linux guests had not printed a line after 8 minutes.
L1_TCG_THREAD = "multi"
L1_MEM_MIB = 4096
# The QEMU that emulates L1 (L0's). Debian 12's own, 7.2, hangs L1: perf counters
# attached to and detached from a vCPU thread in L1 (what kvmtop's per-reason tracing
# does) left both L1 CPUs in "soft lockup" inside L2 guest mode, reproduced three
# times out of three, and once L1 reset itself while libvirt restarted guests. The
# same Debian release's backport, 10.0, runs them (tests/lab/README.md). It is
# unpacked next to the image, never installed: the host lab keeps Debian 12's QEMU.
L0_QEMU_SUITE = "bookworm-backports"
L0_QEMU_PACKAGES = {
    "qemu-system-x86": "1:10.0.2+ds-2+deb13u1~bpo12+1",
    "qemu-system-common": "1:10.0.2+ds-2+deb13u1~bpo12+1",
    "qemu-system-data": "1:10.0.2+ds-2+deb13u1~bpo12+1",
    "seabios": "1.16.3-2~bpo12+1",
}
L0_QEMU_DIR = IMAGE_DIR / "qemu-l0"
L1_STATE = "/var/lib/kvmtop-lab"
L1_CHECKOUT = "/root/kvmtop"
L1_SCENARIO = "kvm"
BOOT_TIMEOUT_S = 600
L2_BOOT_TIMEOUT_S = 1200
UP_TIMEOUT_S = 1800


def log(msg: str) -> None:
    """One progress line on stderr, as the lab script prints them."""
    print(f"lab: nested: {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    """Fail with one line."""
    log(f"error: {msg}")
    sys.exit(1)


def run(cmd: list[str], **kw: object) -> None:
    """Run a command, raising on failure."""
    subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------- image


def venv_python() -> Path:
    """The project's virtualenv python (it builds the wheels L1 installs)."""
    for cand in (ROOT / ".venv/bin/python", Path(sys.executable)):
        if cand.exists():
            return cand
    die("no Python to build wheels with (run `make setup` first)")
    raise AssertionError


def pinned_wheels(python: Path) -> list[str]:
    """WHEELS pinned to the versions the project's virtualenv runs, where it has them."""
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    have = {_canonical(p["name"]): p["version"] for p in json.loads(out or "[]")}
    return [f"{w}=={have[_canonical(w)]}" if _canonical(w) in have else w for w in WHEELS]


def _canonical(name: str) -> str:
    """A distribution name compared the packaging way (PEP 503: case, `-`, `_`, `.`)."""
    return name.lower().replace("_", "-").replace(".", "-")


def image_id(wheels: list[str]) -> str:
    """Hash of everything the image is made of."""
    h = hashlib.sha256()
    h.update(json.dumps([SOURCES, PACKAGES, wheels, VENV, IMAGE_SIZE]).encode())
    for f in sorted(L1_FILES.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    h.update(inspect.getsource(customize).encode())
    return h.hexdigest()[:16]


def image_ready(ident: str) -> bool:
    """The cached image matches `ident`."""
    marker = IMAGE_DIR / "image-id"
    return (
        marker.exists()
        and marker.read_text().strip() == ident
        and all(
            (IMAGE_DIR / f).exists() for f in ("rootfs.img", "vmlinuz", "initrd.img", "id_ed25519")
        )
    )


def ensure_mmdebstrap() -> None:
    """Install Debian's mmdebstrap when missing."""
    if shutil.which("mmdebstrap"):
        return
    log("installing mmdebstrap")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def customize(rootfs: Path, wheelhouse: Path, key_pub: Path, wheels: list[str]) -> None:
    """L1's init, sshd access, marker and kvmtop's virtualenv inside `rootfs`."""
    sbin = rootfs / "usr/local/sbin"
    # PID 1 is busybox init (argv[0] "init" selects the applet); it runs the setup
    # script, respawns sshd and reaps orphans.
    (sbin / "init").symlink_to("/bin/busybox")
    shutil.copy(L1_FILES / "inittab", rootfs / "etc/inittab")
    shutil.copy(L1_FILES / "setup", sbin / "kvmtop-l1-setup")
    (sbin / "kvmtop-l1-setup").chmod(0o755)
    (rootfs / "etc/kvmtop-l1").write_text(
        "This is the kvmtop nested lab's L1 host (tests/lab/nested.py in kvmtop).\n"
    )
    (rootfs / "etc/hostname").write_text("kvmtop-l1\n")
    ssh = rootfs / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(key_pub, ssh / "authorized_keys")
    conf = rootfs / "etc/ssh/sshd_config.d/kvmtop-l1.conf"
    conf.write_text("PermitRootLogin prohibit-password\nUseDNS no\nUsePAM no\n")
    inner = rootfs / "tmp/wheelhouse"
    shutil.copytree(wheelhouse, inner)
    run(["chroot", str(rootfs), "python3", "-m", "venv", "--system-site-packages", VENV])
    names = [w.split("==")[0] for w in wheels]
    # Offline, from the wheels only: none of this host's pip settings apply inside.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run(
        [
            "chroot",
            str(rootfs),
            f"{VENV}/bin/pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            "/tmp/wheelhouse",
            *names,
        ],
        env=env,
    )
    shutil.rmtree(inner)


def cmd_build(force: bool = False) -> dict[str, float]:
    """Build the L1 image unless the cached one is current; returns step timings."""
    python = venv_python()
    wheels = pinned_wheels(python)
    ident = image_id(wheels)
    if image_ready(ident) and not force:
        log(f"build: image up to date ({ident})")
        return {}
    ensure_mmdebstrap()
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    key = IMAGE_DIR / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvmtop-l1", "-f", str(key)])
    with tempfile.TemporaryDirectory(dir=IMAGE_DIR, prefix="build-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        t0 = time.monotonic()
        log(f"build: wheels for L1 ({', '.join(wheels)})")
        pip = subprocess.run(
            [str(python), "-m", "pip", "wheel", "-q", "-w", str(work / "wheelhouse"), *wheels],
            capture_output=True,
            text=True,
            check=False,
        )
        if pip.returncode != 0:
            die(f"pip wheel failed ({pip.returncode}):\n{pip.stderr[-3000:]}")
        timings["wheels_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        log(f"build: mmdebstrap {SUITE} with {len(PACKAGES)} packages (about 2 min)")
        with (IMAGE_DIR / "mmdebstrap.log").open("wb") as mlog:
            proc = subprocess.run(
                [
                    "mmdebstrap",
                    "--variant=apt",
                    "--mode=root",
                    '--aptopt=APT::Install-Recommends "false"',
                    "--dpkgopt=path-exclude=/usr/share/doc/*",
                    "--dpkgopt=path-exclude=/usr/share/man/*",
                    "--dpkgopt=path-exclude=/usr/share/locale/*",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(rootfs),
                    *SOURCES,
                ],
                stdout=mlog,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0:
            tail = (IMAGE_DIR / "mmdebstrap.log").read_text(errors="replace")[-3000:]
            die(f"mmdebstrap failed ({proc.returncode}):\n{tail}")
        timings["mmdebstrap_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        customize(rootfs, work / "wheelhouse", key.with_suffix(".pub"), wheels)
        boot = rootfs / "boot"
        shutil.copy(next(boot.glob("vmlinuz-*")), work / "vmlinuz")
        shutil.copy(next(boot.glob("initrd.img-*")), work / "initrd.img")
        timings["customize_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "kvmtop-l1",
                "-d",
                str(rootfs),
                str(work / "rootfs.img"),
                IMAGE_SIZE,
            ],
            stdout=subprocess.DEVNULL,
        )
        timings["mkfs_s"] = time.monotonic() - t0
        for f in ("rootfs.img", "vmlinuz", "initrd.img"):
            (work / f).replace(IMAGE_DIR / f)
    (IMAGE_DIR / "image-id").write_text(ident + "\n")
    (IMAGE_DIR / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    log(
        "build: image "
        + ident
        + " in "
        + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items())
    )
    return timings


# --------------------------------------------------------------------------- L0's QEMU


def ensure_l0_qemu() -> Path:
    """Download and unpack L0_QEMU_PACKAGES (apt with a private source list and state,
    so the host's apt configuration is untouched and signatures are checked against
    the host's Debian keyring); returns the unpacked root."""
    want = json.dumps(L0_QEMU_PACKAGES, sort_keys=True)
    marker = L0_QEMU_DIR / "packages.json"
    if marker.exists() and marker.read_text() == want:
        return L0_QEMU_DIR / "root"
    shutil.rmtree(L0_QEMU_DIR, ignore_errors=True)
    apt = L0_QEMU_DIR / "apt"
    for d in ("lists/partial", "archives/partial"):
        (apt / d).mkdir(parents=True)
    apt.chmod(0o755)
    (apt / "archives").chmod(0o777)  # apt-get download drops privileges to _apt
    (apt / "sources.list").write_text(f"deb http://deb.debian.org/debian {L0_QEMU_SUITE} main\n")
    opts = [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache::Archives={apt / 'archives'}",
        "-oAPT::Get::List-Cleanup=0",
    ]
    log(
        f"L0 QEMU: {', '.join(f'{k} {v}' for k, v in L0_QEMU_PACKAGES.items())} "
        f"from {L0_QEMU_SUITE}"
    )
    run(["apt-get", *opts, "-qq", "update"])
    run(
        ["apt-get", *opts, "-qq", "download", *(f"{k}={v}" for k, v in L0_QEMU_PACKAGES.items())],
        cwd=apt / "archives",
    )
    root = L0_QEMU_DIR / "root"
    for deb in sorted((apt / "archives").glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(root)])
    marker.write_text(want)
    return root


def l0_qemu_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """The unpacked QEMU's command prefix and environment (its modules and firmware)."""
    env = dict(os.environ, QEMU_MODULE_DIR=str(root / "usr/lib/x86_64-linux-gnu/qemu"))
    return (
        [
            str(root / "usr/bin/qemu-system-x86_64"),
            "-L",
            str(root / "usr/share/seabios"),
            "-L",
            str(root / "usr/share/qemu"),
        ],
        env,
    )


# --------------------------------------------------------------------------- L1


def l1_pid() -> int | None:
    """The running L1 QEMU's pid, if any."""
    try:
        pid = int((RUN_DIR / "qemu.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def ssh_port() -> int:
    """The host port forwarded to L1's sshd."""
    return int((RUN_DIR / "ssh-port").read_text())


def ssh_argv(*cmd: str, tty: bool = False) -> list[str]:
    """ssh to L1 as root (loopback port forward, the image's own key)."""
    return [
        "ssh",
        "-q",
        "-t" if tty else "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        # An L1 that stops answering ends the session instead of hanging CI.
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=8",
        "-i",
        str(IMAGE_DIR / "id_ed25519"),
        "-p",
        str(ssh_port()),
        "root@127.0.0.1",
        *cmd,
    ]


def l1(
    script: str,
    *,
    check: bool = True,
    timeout: float | None = None,
    stdin: bytes | None = None,
    capture: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run a bash script on L1, its output streamed to ours unless `capture`."""
    proc = subprocess.run(
        ssh_argv("bash", "-c", _quote(script)),
        input=stdin,
        check=False,
        timeout=timeout,
        capture_output=capture,
    )
    if check and proc.returncode != 0:
        die(f"on L1 ({proc.returncode}): {script}")
    return proc


def _quote(script: str) -> str:
    """One shell word for the remote shell."""
    return "'" + script.replace("'", "'\\''") + "'"


def free_port() -> int:
    """A free TCP port on loopback for the ssh forward."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def boot() -> float:
    """Start L1 and wait for its sshd; returns the seconds it took."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    overlay = RUN_DIR / "l1.qcow2"
    overlay.unlink(missing_ok=True)
    run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(IMAGE_DIR / "rootfs.img"),
            "-F",
            "raw",
            str(overlay),
        ]
    )
    port = free_port()
    (RUN_DIR / "ssh-port").write_text(f"{port}\n")
    console = RUN_DIR / "console.log"
    console.unlink(missing_ok=True)
    qemu, env = l0_qemu_command(ensure_l0_qemu())
    t0 = time.monotonic()
    run(
        [
            *qemu,
            "-name",
            "kvmtop-l1,process=kvmtop-l1",
            "-accel",
            f"tcg,thread={L1_TCG_THREAD}",
            "-cpu",
            L1_CPU,
            "-smp",
            str(L1_SMP),
            "-m",
            str(L1_MEM_MIB),
            "-nodefaults",
            "-display",
            "none",
            "-kernel",
            str(IMAGE_DIR / "vmlinuz"),
            "-initrd",
            str(IMAGE_DIR / "initrd.img"),
            # net.ifnames=0: the initramfs's udev would otherwise rename eth0 to ens2.
            # tsc=reliable: TCG's vCPUs all read this host's TSC, but the kernel's boot-time
            # warp test, slowed by emulation, calls them unsynchronized and falls back to
            # HPET; without a stable TSC, KVM has no master clock for the L2 guests'
            # kvm-clock (arch/x86/kvm/x86.c pvclock_gtod_data), and their time drifted
            # (measured: a 20 % duty cycle took 74 % of a CPU, the probe's PIT stalled).
            "-append",
            "root=/dev/vda rw console=ttyS0 init=/usr/local/sbin/init quiet "
            "net.ifnames=0 tsc=reliable",
            "-drive",
            f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-chardev",
            f"file,id=con,path={console}",
            "-serial",
            "chardev:con",
            "-qmp",
            f"unix:{RUN_DIR / 'qmp.sock'},server=on,wait=off",
            # A reset of L1 (a triple fault leaves no kernel message) ends QEMU instead of
            # rebooting a host whose lab is gone; the CPU state at the reset is logged.
            "-no-reboot",
            "-d",
            "cpu_reset,guest_errors",
            "-D",
            str(RUN_DIR / "qemu.log"),
            "-pidfile",
            str(RUN_DIR / "qemu.pid"),
            "-daemonize",
        ],
        env=env,
    )
    deadline = t0 + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if l1_pid() is None:
            die(f"L1 QEMU exited during boot; console:\n{_tail(console)}")
        probe = subprocess.run(ssh_argv("true"), capture_output=True, check=False, timeout=60)
        if probe.returncode == 0:
            return time.monotonic() - t0
        time.sleep(1)
    die(f"L1 did not answer ssh within {BOOT_TIMEOUT_S} s; console:\n{_tail(console)}")
    raise AssertionError


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no console log)"


def checkout_files() -> bytes:
    """The checkout as a tar stream: tracked and untracked files, nothing git ignores."""
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if listing.returncode != 0:  # not a git checkout: everything but the venv
        return subprocess.run(
            ["tar", "-C", str(ROOT), "-c", "--exclude=./.venv", "--exclude=./.git", "."],
            capture_output=True,
            check=True,
        ).stdout
    names = [n for n in listing.stdout.split(b"\0") if n and (ROOT / n.decode()).exists()]
    return subprocess.run(
        ["tar", "-C", str(ROOT), "-c", "--null", "-T", "-"],
        input=b"\0".join(names),
        capture_output=True,
        check=True,
    ).stdout


def sync_checkout() -> None:
    """Copy the checkout to L1 (replacing the previous copy)."""
    l1(
        f"rm -rf {L1_CHECKOUT} && mkdir -p {L1_CHECKOUT} && tar -x -C {L1_CHECKOUT}",
        stdin=checkout_files(),
    )


def copy_guest_build() -> None:
    """The host lab's guest kernel, initramfs and probe images, for L1's lab."""
    files = [
        "kernel/vmlinuz",
        "kernel/vmlinux",
        "kernel/package",
        "initramfs.cpio",
        "images",
        "build/build-id",
    ]
    missing = [f for f in files if not (STATE / f).exists()]
    if missing:
        die(f"no guest build in {STATE} (missing {', '.join(missing)}): run `lab build`")
    data = subprocess.run(
        ["tar", "-C", str(STATE), "-c", *files], capture_output=True, check=True
    ).stdout
    l1(f"mkdir -p {L1_STATE} && tar -x -C {L1_STATE}", stdin=data)


def cmd_up() -> None:
    """Build, boot L1, bring up the `kvm` scenario inside it."""
    t_all = time.monotonic()
    timings = cmd_build()
    if l1_pid() is not None:
        log(f"L1 already running (pid {l1_pid()}, ssh port {ssh_port()})")
    else:
        timings["l1_boot_s"] = boot()
        log(f"L1 up in {timings['l1_boot_s']:.1f} s (ssh port {ssh_port()})")
    t0 = time.monotonic()
    sync_checkout()
    copy_guest_build()
    timings["copy_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    log(f"inside L1: tests/lab/lab up {L1_SCENARIO}")
    # Every L2 exit is emulated by TCG, so guests boot several times slower than here.
    proc = l1(
        f"cd {L1_CHECKOUT} && KVMTOP_LAB_BOOT_TIMEOUT={L2_BOOT_TIMEOUT_S} "
        f"tests/lab/lab up {L1_SCENARIO}",
        check=False,
        timeout=UP_TIMEOUT_S,
    )
    if proc.returncode != 0:
        die(f"`lab up {L1_SCENARIO}` inside L1 failed ({proc.returncode})")
    timings["l2_up_s"] = time.monotonic() - t0
    timings["total_s"] = time.monotonic() - t_all
    (RUN_DIR / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    log("up: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items()))


def nested_test_files() -> list[str]:
    """The test files (relative to the checkout) with a test marked `nested`."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "mark.nested" in p.read_text()
    )


def cmd_test(args: list[str]) -> int:
    """pytest -m nested inside L1 on a fresh copy of the checkout."""
    if l1_pid() is None:
        die("L1 is not running: `tests/lab/lab up nested` first")
    sync_checkout()
    env = {"KVMTOP_LAB_SCENARIO": L1_SCENARIO, "KVMTOP_LAB_KEEP": "1"}
    if os.environ.get("CI"):
        env["CI"] = os.environ["CI"]
    assigns = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
    if not any(a.startswith("tests") for a in args):
        # Only the files that have nested tests: collecting the whole suite took
        # L1's emulated CPU about 5 minutes (1,286 items, 27 selected).
        args = nested_test_files() + args
    words = " ".join(_quote(a) for a in args)
    script = (
        f"cd {L1_CHECKOUT} && env {assigns} {VENV}/bin/python -m pytest "
        f"-p no:cacheprovider -m nested {words}"
    )
    return l1(script, check=False).returncode


def cmd_down() -> None:
    """Stop L1 and remove its run directory."""
    pid = l1_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if l1_pid() is None:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        log(f"down: stopped L1 (pid {pid})")
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def cmd_status() -> None:
    """Print whether L1 runs and what its lab runs."""
    pid = l1_pid()
    ident = (
        (IMAGE_DIR / "image-id").read_text().strip()
        if (IMAGE_DIR / "image-id").exists()
        else "none"
    )
    print(f"nested image: {ident} ({IMAGE_DIR})")
    if pid is None:
        print("nested L1: not running")
        return
    print(f"nested L1: pid {pid}, ssh port {ssh_port()} (tests/lab/lab nested ssh)")
    l1(f"cd {L1_CHECKOUT} && tests/lab/lab status", check=False, timeout=120)


def main() -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--force", action="store_true")
    sub.add_parser("up")
    sub.add_parser("test", help="pytest -m nested [PYTEST ARGS] inside L1")
    sub.add_parser("ssh", help="a shell, or [COMMAND ...], on L1")
    sub.add_parser("status")
    sub.add_parser("down")
    # `test` and `ssh` pass the rest of the line on untouched (pytest options included).
    argv = sys.argv[1:]
    if argv and argv[0] in ("test", "ssh"):
        args = argparse.Namespace(cmd=argv[0], args=argv[1:], command=argv[1:])
    else:
        args = ap.parse_args(argv)
    if args.cmd == "build":
        cmd_build(force=args.force)
    elif args.cmd == "up":
        cmd_up()
    elif args.cmd == "test":
        return cmd_test(args.args)
    elif args.cmd == "ssh":
        if l1_pid() is None:
            die("L1 is not running")
        return subprocess.run(
            ssh_argv(*args.command, tty=not args.command and sys.stdin.isatty()), check=False
        ).returncode
    elif args.cmd == "status":
        cmd_status()
    else:
        cmd_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
