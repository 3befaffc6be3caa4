"""Files kvmtop writes stay private (#16): recordings, slices, reports and exports are
created with mode 0600, never through a symbolic link, never into another user's
file (`kvmtop.store.outfile.open_output`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmtop.commands.main import main
from kvmtop.store import writer as writer_module
from kvmtop.store.meta import StoreError
from kvmtop.store.outfile import OutputFileError, TextOutput, open_output
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.store.conftest import make_samples, write

NOBODY = 65534


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away (what a careless service manager sets)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _config(tmp_path: Path) -> list[str]:
    config = tmp_path / "config.toml"
    config.write_text("")
    return ["--config", str(config)]


def test_a_new_recording_is_0600_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "new.kvmtop"
    writer = StoreWriter(path)
    writer.append(make_samples(1)[0])
    assert _mode(path) == 0o600
    assert _mode(Path(f"{path}-wal")) == 0o600  # SQLite copies the file's mode
    writer.close()


def test_record_refuses_a_dangling_symlink(
    tmp_path: Path, open_umask: None, capsys: pytest.CaptureFixture[str]
) -> None:
    link, target = tmp_path / "rec.kvmtop", tmp_path / "elsewhere.kvmtop"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="is a symbolic link; kvmtop does not write through one"):
        StoreWriter(link)
    assert not target.exists()
    # An output that cannot be written: status 1, and the one line (no "recording
    # to" line before it: nothing is recorded).
    assert main(["record", "-o", str(link), "--duration", "1", *_config(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"kvmtop: cannot write recording {link}: is a symbolic link; kvmtop does not "
        "write through one (give the path it points to)"
    ]
    assert not target.exists() and link.is_symlink()


def test_record_refuses_a_symlink_to_a_recording(tmp_path: Path) -> None:
    target = tmp_path / "real.kvmtop"
    StoreWriter(target).close()
    link = tmp_path / "link.kvmtop"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        StoreWriter(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_empty_file_of_another_user_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "planted.kvmtop"
    path.touch()
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o666)
    with pytest.raises(
        StoreError,
        match=rf"{path}: exists and belongs to another user "
        rf"\(uid {NOBODY}\), who could read what kvmtop writes",
    ):
        StoreWriter(path)
    st = path.stat()
    assert (st.st_size, st.st_uid, stat.S_IMODE(st.st_mode)) == (0, NOBODY, 0o666)
    assert not Path(f"{path}-wal").exists()


def test_an_empty_file_of_ours_becomes_a_0600_recording(tmp_path: Path) -> None:
    path = tmp_path / "touched.kvmtop"
    path.touch()
    path.chmod(0o666)
    writer = StoreWriter(path)
    writer.append(make_samples(1)[0])
    writer.close()
    assert _mode(path) == 0o600
    with StoreReader(path) as r:
        assert r.count() == 1


def test_an_existing_recording_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.kvmtop"
    samples = make_samples(2)
    writer = StoreWriter(path)
    writer.append(samples[0])
    writer.close()
    path.chmod(0o640)  # shared with a monitoring group on purpose
    writer = StoreWriter(path)
    writer.append(samples[1])
    writer.close()
    assert _mode(path) == 0o640


def test_a_path_replaced_while_opening_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, victim = tmp_path / "rec.kvmtop", tmp_path / "victim.kvmtop"
    StoreWriter(victim).close()
    before = victim.read_bytes()

    def racing(name: str, **kw: bool) -> int:
        fd = open_output(name, **kw)
        os.unlink(name)
        os.symlink(victim, name)  # swapped between kvmtop's checks and SQLite's open
        return fd

    monkeypatch.setattr(writer_module, "open_output", racing)
    with pytest.raises(StoreError, match="was replaced while kvmtop opened it; nothing written"):
        StoreWriter(path)
    assert victim.read_bytes() == before


@pytest.mark.parametrize("command", [("report", "--format", "json"), ("export", "--format", "csv")])
def test_reports_and_exports_are_0600(
    tmp_path: Path, open_umask: None, command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    recording = write(tmp_path / "rec.kvmtop", make_samples(3))
    name, *rest = command
    new, old, link = tmp_path / "new.out", tmp_path / "old.out", tmp_path / "link.out"
    old.write_text("an older report\n")
    old.chmod(0o644)
    link.symlink_to(tmp_path / "target.out")
    for out in (new, old):
        assert main([name, str(recording), *rest, "-o", str(out), *_config(tmp_path)]) == 0
        assert _mode(out) == 0o600 and "an older report" not in out.read_text()
    # The temporary files were renamed into place: none left beside them.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.toml",
        "link.out",
        "new.out",
        "old.out",
        "rec.kvmtop",
    ]
    assert main([name, str(recording), *rest, "-o", str(link), *_config(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"kvmtop: cannot write {link}: is a symbolic link; kvmtop does not write through "
        "one (give the path it points to)"
    )
    assert not (tmp_path / "target.out").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_report_never_replaces_a_file_of_another_user(tmp_path: Path) -> None:
    path = tmp_path / "theirs.html"
    path.write_text("theirs\n")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(OutputFileError, match="belongs to another user"):
        TextOutput(path)
    assert path.read_text() == "theirs\n"
    assert os.listdir(tmp_path) == ["theirs.html"]  # no temporary file made either


def test_devices_are_written_as_they_are() -> None:
    fd = open_output(os.devnull, replace=True)
    try:
        assert os.write(fd, b"x") == 1
    finally:
        os.close(fd)
    assert _mode(Path(os.devnull)) == 0o666


def test_an_output_is_put_in_place_only_when_committed(tmp_path: Path) -> None:
    """TextOutput writes a temporary file next to OUT: OUT changes on `commit` only,
    and leaving without it (an error, a refused option) drops what was written."""
    out = tmp_path / "report.txt"
    out.write_text("older\n")
    with TextOutput(out) as output:
        output.file.write("half of a report")
        output.file.flush()
        assert out.read_text() == "older\n"
        (temporary,) = set(tmp_path.iterdir()) - {out}
        assert temporary.name.startswith(".kvmtop-") and _mode(temporary) == 0o600
    assert os.listdir(tmp_path) == ["report.txt"] and out.read_text() == "older\n"
    with TextOutput(out) as output:
        output.file.write("the new report\n")
        output.commit()
    assert os.listdir(tmp_path) == ["report.txt"] and out.read_text() == "the new report\n"


@pytest.mark.parametrize("command", [("report", "--format", "text"), ("export", "--format", "csv")])
def test_a_device_or_fifo_is_written_as_it_is(tmp_path: Path, command: tuple[str, ...]) -> None:
    """-o /dev/null or a FIFO: written in place (a rename would replace the device
    node), as before."""
    recording = write(tmp_path / "rec.kvmtop", make_samples(3))
    name, *rest = command
    assert main([name, str(recording), *rest, "-o", os.devnull, *_config(tmp_path)]) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    read = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the open does not wait
    try:
        status = main([name, str(recording), *rest, "-o", str(fifo), *_config(tmp_path)])
        assert status == 0 and os.read(read, 1 << 16)
    finally:
        os.close(read)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
