"""The command line as an operator meets it: bad URIs, no libvirt, batch output."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmtop.commands.main import EXIT_PIPE
from kvmtop.commands.manual import MANUALS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "lab-sample.kvmtop"


def kvmtop(
    *args: str,
    block_libvirt: bool = False,
    timeout: float = 60,
    config_home: str = "/nonexistent",
) -> subprocess.CompletedProcess[str]:
    """Run `python -m kvmtop ARGS` in a subprocess (optionally with libvirt unimportable;
    `config_home` is its XDG_CONFIG_HOME)."""
    prelude = "import sys; " + ("sys.modules['libvirt'] = None; " if block_libvirt else "")
    code = prelude + "from kvmtop.commands.main import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(ROOT / "tests"),
            "XDG_CONFIG_HOME": config_home,
        },
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """Assert the run failed with `status` and exactly one `kvmtop: ` line on stderr
    holding `words`; return that line."""
    assert result.returncode == status, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith("kvmtop: ")
    for word in words:
        assert word in line
    return line


def test_unopenable_uri_is_a_clear_error_and_nonzero() -> None:
    pytest.importorskip("libvirt")
    result = kvmtop("-c", "test:///no/such/file.xml", "--batch", "--count", "1")
    assert result.returncode == 1
    assert "cannot open test:///no/such/file.xml" in result.stderr
    assert "Traceback" not in result.stderr


def test_explicit_uri_without_libvirt_python_is_an_error() -> None:
    result = kvmtop("-c", "test:///default", "--batch", "--count", "1", block_libvirt=True)
    assert result.returncode == 1
    assert "libvirt-python not installed" in result.stderr


def test_batch_runs_without_libvirt_python_and_says_why() -> None:
    result = kvmtop(
        "--batch", "--count", "1", "--interval", "0.5", "--format", "json", block_libvirt=True
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.splitlines()[0])
    # Without libvirt, KVM processes on this host (if any) are still found, unmanaged.
    assert all(g["managed"] == "unmanaged" for g in line["guests"])
    assert line["host"]["cpu_busy_pct"] is not None
    libvirt = next(s for s in line["sources"] if s["name"] == "libvirt")
    assert not libvirt["ok"] and "libvirt-python not installed" in libvirt["reason"]


def test_batch_json_against_the_test_driver() -> None:
    pytest.importorskip("libvirt")
    result = kvmtop(
        "-c", "test:///default", "--batch", "--count", "2", "--interval", "0.5", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == 2
    guest = lines[-1]["guests"][0]
    assert guest["name"] == "test" and guest["state"] == "running"
    for key in (
        "uuid",
        "vcpus",
        "cpu_pct",
        "steal_pct",
        "steal_max_pct",
        "exits_per_s",
        "disk_iops",
        "disk_read_ms",
        "disk_write_ms",
        "net_rx_bps",
        "net_tx_bps",
        "net_drops_per_s",
        "mem_used_bytes",
    ):
        assert key in guest
    # The test driver reports no stats groups beyond state: unknown, never 0.
    assert guest["cpu_pct"] is None and guest["mem_used_bytes"] is None


def test_broken_explicit_config_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("interval_s = 'fast'\n")
    result = kvmtop("--config", str(cfg), "--batch", "--count", "1")
    assert result.returncode == 2
    assert result.stderr == f"kvmtop: {cfg}: 'interval_s' expected `float`, got `str` (line 1)\n"


@pytest.mark.parametrize("flag", [False, True])
def test_rtt_probe_only_with_the_flag(flag: bool) -> None:
    """Probing sends packets: the netprobe source exists only when --rtt asks for it."""
    pytest.importorskip("libvirt")
    extra = ("--rtt",) if flag else ()
    result = kvmtop("-c", "test:///default", "--batch", "--count", "1", "--format", "json", *extra)
    assert result.returncode == 0, result.stderr
    sources = {s["name"]: s for s in json.loads(result.stdout.splitlines()[-1])["sources"]}
    assert ("netprobe" in sources) is flag
    if flag:
        assert sources["netprobe"]["ok"], sources["netprobe"]["reason"]


# ---------------------------------------------------------------- errors in one line


@pytest.mark.parametrize(
    "command",
    [
        ("replay", str(SAMPLE), "--batch", "--format", "json"),
        ("export", str(SAMPLE), "--format", "jsonl"),
    ],
)
def test_a_reader_that_stops_early_ends_kvmtop_quietly(command: tuple[str, ...]) -> None:
    """`kvmtop ... | head -1`: the usual status of a process ended by SIGPIPE, and
    nothing on stderr (the output is megabytes, far beyond the pipe's buffer)."""
    line = shlex.join([sys.executable, "-m", "kvmtop", *command])
    result = subprocess.run(
        ["bash", "-c", f'{line} | head -1; exit "${{PIPESTATUS[0]}}"'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": "/nonexistent"},
    )
    assert result.returncode == EXIT_PIPE == 141, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["time"] > 0
    assert f"{EXIT_PIPE}  standard output was closed early" in MANUALS["replay"].exit_status


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    """The default file: one warning and the defaults; --config: exit 2, one line."""
    (tmp_path / "kvmtop").mkdir()
    config = tmp_path / "kvmtop" / "config.toml"
    config.write_bytes(b'uri = "caf\xe9"\n')
    result = kvmtop(
        "replay",
        str(SAMPLE),
        "--batch",
        "--count",
        "1",
        "--format",
        "json",
        config_home=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"kvmtop: warning: {config}: not UTF-8 text, as TOML must be (invalid continuation "
        "byte at byte 10, line 1); using defaults"
    ]
    assert json.loads(result.stdout)["guests"]
    result = kvmtop("--config", str(config), "replay", str(SAMPLE), "--batch")
    one_line_error(result, 2, str(config), "not UTF-8")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("balloon_every = 0", "'balloon_every'"),
        ("balloon_every = -3", "'balloon_every'"),
        ("window_size = 0", "'window_size'"),
        ("interval_s = inf", "'interval_s'"),
        ("interval_s = nan", "'interval_s'"),
        ("[detectors.steal]\nwarn_mean_pct = nan", "'detectors.steal.warn_mean_pct'"),
    ],
)
def test_config_numbers_out_of_range_are_exit_2(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text + "\n")
    result = kvmtop(
        "--config",
        str(config),
        "--batch",
        "--count",
        "1",
        "--interval",
        "0.5",
        "--format",
        "json",
        block_libvirt=True,
    )
    one_line_error(result, 2, str(config), key)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("interval_s = ", ("not valid TOML", "(at line 1, column 14)")),
        ('[detectors.overrides."db-*"]\nstael = {}', ("unknown key", '"db-*".stael', "line 2")),
        ("[detectors]\ndisabled = ['x']", ("'detectors.disabled[0]' invalid enum value 'x'",)),
    ],
)
def test_a_broken_config_file_is_one_line_and_exit_2(
    tmp_path: Path, text: str, words: tuple[str, ...]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text + "\n")
    result = kvmtop("--config", str(config), "--batch", "--count", "1", block_libvirt=True)
    one_line_error(result, 2, f"kvmtop: {config}: ", *words)


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "1e6"])
def test_interval_flag_out_of_range_is_exit_2(value: str) -> None:
    result = kvmtop("--interval", value, "--batch", "--count", "1", block_libvirt=True)
    one_line_error(result, 2, "--interval: expected `float`", f"got {float(value)!r}")


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """A copy of the example recording, which a test may try to overwrite."""
    copy = tmp_path / "host.kvmtop"
    shutil.copyfile(SAMPLE, copy)
    return copy


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


EXPORT = ("export", "--format", "csv")
REPORT = ("report", "--format", "text")


@pytest.mark.parametrize("command", [EXPORT, REPORT], ids=["export", "report"])
@pytest.mark.parametrize("out", ["missing/x.out", ".", "/dev/full"])
def test_an_output_that_cannot_be_written_is_exit_1(
    recording: Path, command: tuple[str, ...], out: str
) -> None:
    target = out if out.startswith("/") else str(recording.parent / out)
    result = kvmtop(command[0], str(recording), *command[1:], "-o", target)
    one_line_error(result, 1, f"cannot write {target}")


def shell(line: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m kvmtop ARGS` through bash with `line` after it (a redirection)."""
    command = shlex.join([sys.executable, "-m", "kvmtop", *map(str, args)])
    return subprocess.run(
        ["bash", "-c", f"{command} {line}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": "/nonexistent"},
    )


@pytest.mark.parametrize(
    "command",
    [
        (EXPORT[0], SAMPLE, *EXPORT[1:]),
        (REPORT[0], SAMPLE, *REPORT[1:]),
        ("replay", SAMPLE, "--batch", "--format", "json"),
        ("--batch", "--count", "1", "--interval", "0.5"),
        ("doctor", "--measure", "0"),
        ("doctor", "--measure", "0", "--format", "json"),
        ("completion", "bash"),
        ("completion", "zsh"),
        ("completion", "fish"),
    ],
    ids=["export", "report", "replay", "live", "doctor", "doctor-json", "bash", "zsh", "fish"],
)
def test_standard_output_that_cannot_be_written_is_exit_1(command: tuple[str | Path, ...]) -> None:
    """Every command that writes standard output: one line and status 1 on a full
    disk, never a traceback (nor Python's "Exception ignored" at exit, for an output
    short enough to stay in the buffer until then)."""
    one_line_error(
        shell(">/dev/full", *command), 1, "cannot write standard output: No space left on device"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("replay", "--batch", "--format", "json"),
        REPORT,
        EXPORT,
    ],
    ids=lambda c: c[0],
)
def test_standard_output_onto_the_recording_is_refused(
    recording: Path, command: tuple[str, ...]
) -> None:
    """`kvmtop replay FILE --batch >> FILE`: refused as -o FILE is, nothing written."""
    before = digest(recording)
    result = shell(f">> {shlex.quote(str(recording))}", command[0], recording, *command[1:])
    one_line_error(result, 2, f"standard output is the recording {recording} itself")
    assert digest(recording) == before


@pytest.mark.parametrize("command", [EXPORT, REPORT], ids=["export", "report"])
@pytest.mark.parametrize("link", [False, True], ids=["itself", "hard-link"])
def test_the_recording_is_never_its_own_output(
    recording: Path, command: tuple[str, ...], link: bool
) -> None:
    out = recording
    if link:
        out = recording.with_name("link.out")
        out.hardlink_to(recording)
    before = digest(recording)
    result = kvmtop(command[0], str(recording), *command[1:], "-o", str(out))
    one_line_error(result, 2, f"-o {out} is the recording {recording} itself")
    assert digest(recording) == before


@pytest.mark.parametrize(
    "command",
    [
        ("replay", "--batch"),
        ("slice", "-o", "{tmp}/cut.kvmtop"),
        ("report",),
        ("export", "--format", "csv"),
    ],
    ids=lambda c: c[0],
)
def test_from_later_than_to_is_exit_2(tmp_path: Path, command: tuple[str, ...]) -> None:
    extra = [word.format(tmp=tmp_path) for word in command[1:]]
    result = kvmtop(command[0], str(SAMPLE), "--from", "+2m", "--to", "+1m", *extra)
    one_line_error(result, 2, "--from +2m (", "is later than --to +1m (")
    assert result.stdout == ""
    assert not (tmp_path / "cut.kvmtop").exists()
