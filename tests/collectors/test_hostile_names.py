"""Issue #16 at the source: an unmanaged QEMU's name from /proc/PID/cmdline stays the
exact string in the sample and in a recording (only what shows it escapes it)."""

from __future__ import annotations

from pathlib import Path

from kvmtop.collectors.processes import ProcessCollector
from kvmtop.model.sample import Sample
from kvmtop.store.reader import StoreReader
from tests.collectors.test_processes import HZ, FakeProc
from tests.hostile import BAD, BIDI
from tests.store.conftest import write


def test_unmanaged_names_are_kept_exact_in_the_sample_and_the_recording(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    for pid, name in ((600, BAD), (700, BIDI)):
        fake.process(
            pid,
            "qemu-system-x86",
            argv=("qemu-system-x86_64", "-name", name, "-enable-kvm"),
            fds=("anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0"),
            threads={pid + 1: "CPU 0/KVM", pid + 2: "IO \x1b]0;x\x07"},
        )
    guests = ProcessCollector(fake.root, user_hz=HZ).enrich([])
    assert [(g.name, g.managed) for g in guests] == [(BAD, "unmanaged"), (BIDI, "unmanaged")]
    assert "IO \x1b]0;x\x07" in {t.name for t in guests[0].threads}  # -object iothread,id=

    path = write(
        tmp_path / "unmanaged.kvmtop",
        [Sample(wall_s=1.0 + i, mono_ns=i, host=None, guests=guests, sources=()) for i in range(2)],
    )
    with StoreReader(path) as reader:
        read = list(reader.iter())
    assert [[g.name for g in s.guests] for s in read] == [[BAD, BIDI]] * 2
    assert "IO \x1b]0;x\x07" in {t.name for t in read[-1].guests[0].threads}
