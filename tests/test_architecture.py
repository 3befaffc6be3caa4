"""Layer rules, checked by machine: headless modules never load the TUI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "modules",
    [
        "kvmtop.feed.live, kvmtop.feed.replay, kvmtop.sampler, kvmtop.config",
        "kvmtop.headless.batch",
        "kvmtop.model.rates.frame, kvmtop.model.snapshot, kvmtop.model.window",
        "kvmtop.commands.main, kvmtop.commands.parser",
        "kvmtop.report.render, kvmtop.report.html, kvmtop.commands.export, kvmtop.headless.export",
    ],
)
def test_headless_imports_leave_textual_out(modules: str) -> None:
    code = (
        f"import sys; import {modules}; print('textual' in sys.modules, 'libvirt' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    assert out == ["False", "False"]


RENDERING = (
    "jinja2",
    "markupsafe",
    "kvmtop.report.content",
    "kvmtop.report.text",
    "kvmtop.report.as_json",
    "kvmtop.report.html",
    "kvmtop.report.plots",
    "kvmtop.report.svg",
)
"""The report's rendering code and the template engine it brings."""


def rendering_loaded(code: str) -> list[str]:
    """The `RENDERING` modules loaded after running `code` in a fresh interpreter."""
    probe = (
        f"import sys; {code}; print(' '.join(sorted(m for m in sys.modules "
        f"if m.startswith({RENDERING!r}))))"
    )
    return subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.split()


def test_recording_loads_no_rendering_code() -> None:
    """`kvmtop record`: its recorder, the index it writes as it goes, and the CLI's
    parser (which holds every command's options, report's too) load no renderer and
    no jinja2; neither does `kvmtop export`, which reads frames as the report does."""
    code = (
        "import kvmtop.commands.record, kvmtop.headless.recorder, kvmtop.report.index, "
        "kvmtop.commands.export, kvmtop.headless.export, kvmtop.commands.main; "
        "kvmtop.commands.parser.build_parser()"
    )
    assert rendering_loaded(code) == []


def test_rendering_a_report_loads_the_renderers() -> None:
    """The probe above sees what rendering loads: a page needs jinja2."""
    loaded = rendering_loaded("import kvmtop.report.html")
    assert {"jinja2", "kvmtop.report.html", "kvmtop.report.svg"} <= set(loaded)


def test_import_linter_contracts() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter not installed (pip install -e '.[dev]')")
    result = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# kvmtop stands alone: its code, docs and tests cite only what a reader of the
# repository has. The strings are split so this file does not match itself.
OUTSIDE = (b"../" + b"shared", b"shared/" + b"reference")
SCANNED = ("kvmtop", "tests", "bench", "docs", "README.md")

# A citation of a page in the repository, optionally with a heading anchor:
# `docs/detectors.md#steal`, `tests/lab/README.md#known-limits-of-this-machine`.
CITATION = re.compile(r"(?<![\w./-])((?:docs|tests|bench|kvmtop)/[\w./-]*?\.md)(?:#([\w-]+))?")
# A relative Markdown link inside a page: `[text](sources.md#steal)`, `(#rolling-median)`.
MD_LINK = re.compile(r"\]\((?!https?:|mailto:)([^)\s#]*)(?:#([\w-]+))?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def scanned_files() -> list[Path]:
    """Every file under the scanned folders (compiled bytecode aside)."""
    files: list[Path] = []
    for top in SCANNED:
        path = ROOT / top
        if path.is_file():
            files.append(path)
        else:
            files += sorted(
                f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts
            )
    return files


def anchors(page: Path) -> set[str]:
    """The heading anchors of a Markdown page, as GitHub renders them: lower case,
    punctuation other than `-` and `_` dropped, spaces turned into hyphens."""
    text = page.read_text(encoding="utf-8")
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in HEADING.findall(text)
    }


def test_nothing_points_outside_the_repository() -> None:
    offenders = [
        str(f.relative_to(ROOT))
        for f in scanned_files()
        if any(needle in f.read_bytes() for needle in OUTSIDE)
    ]
    assert not offenders, f"files pointing outside the repository: {offenders}"


def test_cited_pages_and_headings_exist() -> None:
    missing: list[str] = []
    cited = 0
    for f in scanned_files():
        text = f.read_bytes().decode("utf-8", "replace")
        targets = [(ROOT / page, anchor, page) for page, anchor in CITATION.findall(text)]
        if f.suffix == ".md":
            targets += [
                (f.parent / link if link else f, anchor, link or f.name)
                for link, anchor in MD_LINK.findall(text)
                if link.endswith(".md") or (not link and anchor)
            ]
        for page, anchor, shown in targets:
            cited += 1
            where = f"{f.relative_to(ROOT)}: {shown}{'#' + anchor if anchor else ''}"
            if not page.resolve().is_file():
                missing.append(f"{where} (no such page)")
            elif anchor and anchor not in anchors(page.resolve()):
                missing.append(f"{where} (no such heading)")
    assert cited, "no citation found: the patterns no longer match the code"
    assert not missing, "\n".join(missing)


def test_every_module_is_in_a_layer() -> None:
    """The "Data flows one way" contract places every module of kvmtop: a module
    left out of it is a module whose imports nobody checks."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(
        c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == "Data flows one way"
    )
    placed = {name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)}
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "kvmtop").rglob("*.py")
    }
    left_out = sorted(
        m for m in modules - {"kvmtop"} if not any(m == p or m.startswith(p + ".") for p in placed)
    )
    assert left_out == []
