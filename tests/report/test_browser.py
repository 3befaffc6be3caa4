"""The HTML report in a real browser (headless Chromium): it renders, offline, and every
plot is laid out with its lines and shaded findings.

Skips when Chromium is not installed (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from kvmtop.commands.main import main
from kvmtop.report.metrics import GUEST_METRICS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (apt-get install --no-install-recommends chromium): "
    "the HTML report's browser check needs it",
)
WIDTH, HEIGHT = 1280, 2000

PROBE = """<!DOCTYPE html><html><body>
<iframe id="f" src="report.html" width="1280" height="2000"></iframe>
<script>
document.getElementById("f").addEventListener("load", () => {
  const d = document.getElementById("f").contentDocument;
  const out = [...d.querySelectorAll("svg.plot")].map((s) => {
    const r = s.getBoundingClientRect();
    return [s.dataset.metric, Math.round(r.width), Math.round(r.height),
            s.querySelectorAll("polyline").length,
            s.querySelectorAll("rect.finding-span").length].join(":");
  });
  const p = document.createElement("pre");
  p.id = "result";
  p.textContent = out.join(" ");
  document.body.appendChild(p);
});
</script></body></html>
"""
"""Reads, from inside the browser, the laid-out size of every plot of the report."""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def report_html(recording: Path, tmp_path: Path) -> Path:
    out = tmp_path / "report.html"
    assert main(["report", str(recording), "--format", "html", "-o", str(out)]) == 0
    return out


def png_rows(png: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, filtered scanlines) of an 8-bit RGB or RGBA PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + length]
        header = data if kind == b"IHDR" else header
        idat += data if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    stride = 1 + width * (3 if colour == 2 else 4)
    raw = zlib.decompress(idat)
    return width, height, [raw[i : i + stride] for i in range(0, len(raw), stride)]


def test_report_renders_in_a_browser(report_html: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    done = chromium(
        tmp_path, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", report_html.as_uri()
    )
    assert png.exists(), done.stderr
    width, height, rows = png_rows(png.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    # A blank page filters to uniform scanlines; text and tables do not.
    busy = sum(1 for row in rows if len(set(row[1:])) > 1)
    assert busy > HEIGHT // 10, f"only {busy} of {HEIGHT} rows have anything on them"


def test_every_plot_is_laid_out(report_html: Path, tmp_path: Path) -> None:
    probe = report_html.with_name("probe.html")
    probe.write_text(PROBE, encoding="utf-8")
    done = chromium(
        tmp_path,
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    )
    found = re.search(r'<pre id="result">([^<]*)</pre>', done.stdout)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    plots = {}
    for item in found[1].split():
        key, w, h, lines, spans = item.split(":")
        plots[key] = (int(w), int(h), int(lines), int(spans))
    incidents = {k for k in plots if k.startswith("incident-")}
    assert set(plots) - incidents == {*(m.key for m in GUEST_METRICS if m.plot), "host"}
    for key, (w, h, lines, _) in plots.items():
        assert key in incidents or (w > 900 and h > 200 and lines >= 1), (key, plots[key])
    # The small plot of each incident (leak, steal, drops), its finding shaded.
    assert len(incidents) == 3
    for key in incidents:
        w, h, lines, spans = plots[key]
        assert 400 < w < 900 and 100 < h < 200 and lines == 1 and spans == 1, (key, plots[key])
    assert plots["steal_max_pct"][3] == 1  # the steal finding, shaded
    assert plots["mem_used"][3] == 1  # the leak
