"""The report in a real headless Chromium: the table renders, no console errors, a screenshot is kept.

.ci/run installs Debian's `chromium`; where it is missing these tests skip and say so. The screenshot
goes to artifacts/report-table1.png (git-ignored) for a person or CI to look at.
"""
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench.report.render import render_all
from tests.bench.report_fixtures import table1_result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as root in a container Chromium needs --no-sandbox; the rest keeps it offline and quiet
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found: `apt-get install chromium` "
                                "(.ci/run installs it) to render the report in a real browser")


def chromium(page: Path, tmp_path, *args):
    """(stdout, console messages) of Chromium opening page from file:// with a fresh profile."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # console.* calls and uncaught exceptions are logged as "...:INFO:CONSOLE:<line>] "message", source: ..."
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_console_errors_are_detected(tmp_path):
    """The check below is real: a page that logs an error and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><p>x</p><script>console.error("boom"); missing_fn();</script>')
    _, console = chromium(bad, tmp_path, "--dump-dom")
    assert any('"boom"' in line for line in console) and any("missing_fn" in line for line in console)


def test_report_renders_in_chromium_without_console_errors(tmp_path, monkeypatch):
    _, out = table1_result(tmp_path, monkeypatch)
    render_all(out)
    page = out / "table1.html"
    dom, console = chromium(page, tmp_path, "--dump-dom")
    assert console == []
    assert 'class="paper-table"' in dom and dom.count('<tr class="reproduced">') == 5
    assert dom.count('<tr class="reference">') == 10 and "675.13" in dom and "✗ fail" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script" not in dom  # shown as text, never run
    index_dom, index_console = chromium(out / "index.html", tmp_path, "--dump-dom")
    assert index_console == [] and 'href="table1.html"' in index_dom

    shot = tmp_path / "report-table1.png"
    _, console = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1400,2600")
    assert console == [] and shot.is_file()
    from PIL import Image
    with Image.open(shot) as image:
        assert image.size == (1400, 2600)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # not a blank page
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    print(f"screenshot: {ARTIFACTS / shot.name}")
