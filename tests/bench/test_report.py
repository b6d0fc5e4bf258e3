"""HTML report: the paper's layout, statuses and reasons, escaping, self-contained files, the index."""
import copy
from html.parser import HTMLParser

from bench.report.render import plot_points, render_all, render_index, render_suite, table_grid
from bench.results import write_json_atomic
from tests.bench.report_fixtures import HOSTILE, table1_result
from tests.bench.runner_helpers import cli


class References(HTMLParser):
    """Collects every src/href and the tags of a page."""

    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def parse(path):
    parser = References()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_table_grid_follows_the_papers_layout(tmp_path, monkeypatch):
    result, _ = table1_result(tmp_path, monkeypatch)
    grid = table_grid(result)
    assert list(grid.columns) == ["params", "flops", "fid", "sfid", "is", "precision", "recall"]
    assert list(grid.index)[:3] == ["ADM", "LDM-4", "U-ViT-L/2"] and len(grid) == 15
    assert grid.loc["DiT-L", "sfid"] is None  # "-" in the paper
    assert grid.loc["DiT-XL", "params"]["measured"] == 675.129632


def test_suite_page_shows_measured_next_to_paper_with_status_and_reason(tmp_path, monkeypatch):
    result, out = table1_result(tmp_path, monkeypatch)
    html = render_suite(result, out).read_text(encoding="utf-8")
    assert "675.13" in html and "paper 675 M" in html and "118.69" in html
    for status in ("st-pass", "st-fail", "st-skipped", "st-reference"):
        assert f'class="cell {status}"' in html
    assert "Erratum: Table 1 prints 468M" in html and "458.10 is outside [467.50, 469.00)" in html
    assert "dydit-xl-2-lambda0.7 (missing: " in html and "a CUDA GPU" in html
    assert "judged checks, not compared with the paper" in html and "a 2-image &lt;b&gt;run&lt;/b&gt;" in html
    assert "git.commit" in html and "suite_sha256" in html and "tf32.matmul" in html


def test_hostile_row_name_is_text_and_pages_have_no_scripts_or_network(tmp_path, monkeypatch):
    result, out = table1_result(tmp_path, monkeypatch)
    pages = render_all(out)
    html = (out / "table1.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE not in html
    for page in pages:
        parsed = parse(page)
        assert "script" not in parsed.tags, page
        for ref in parsed.refs:
            assert not ref.startswith(("http:", "https:", "//")), (page, ref)
            if not ref.startswith(("#", "data:")):
                assert (page.parent / ref).is_file(), (page, ref)  # every link works from file://


def test_plot_has_the_papers_points_and_ours(tmp_path, monkeypatch):
    result, out = table1_result(tmp_path, monkeypatch)
    points = plot_points(result, {"x": "flops", "y": "fid"}).set_index("row")
    assert points.loc["ADM", "paper_x"] == 1120 and points.loc["DiT-XL", "ours_x"] == 118.6887
    assert points.loc["DyDiT-XL λ=0.5", "paper_x"] == 57.88
    render_suite(result, out)
    png = out / "table1_flops_fid.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_index_lists_every_suite_with_counts_and_links(tmp_path, monkeypatch):
    result, out = table1_result(tmp_path, monkeypatch)
    other = copy.deepcopy(result)
    other.update(suite="table4", title="Table 4: samplers", profile="full")
    write_json_atomic(other, out / "table4.json")
    (out / "other-tool.json").write_text('{"not": "a result"}')  # ignored
    html = render_index(out).read_text(encoding="utf-8")
    assert 'href="table1.html"' in html and 'href="table4.html"' in html and "other-tool" not in html
    n = result["counts"]
    assert n == {"pass": 7, "fail": 1, "inconclusive": 0, "measured": 0, "skipped": 22, "error": 0, "reference": 53}
    assert f">{2 * n['reference']}</th>" in html  # totals over both suites
    assert "7 of 8 judged cells held; not: DiT-L / params" in html  # what held, per suite


def test_the_index_summary_names_failed_cells_and_sections():
    from bench.report.render import claims_summary
    cells = [{"row": f"r{i}", "column": "c", "status": "fail"} for i in range(6)]
    cells += [{"row": "ok", "column": "c", "status": "pass"}, {"row": "s", "column": "c", "status": "skipped"}]
    text = claims_summary({"cells": cells, "sections": [{"title": "Loops", "status": "fail"}]})
    assert text == "1 of 7 judged cells held; not: r0 / c, r1 / c, r2 / c, r3 / c and 2 more. Sections: Loops: fail"


def test_report_command_rerenders_from_json(tmp_path, monkeypatch, capsys):
    _, out = table1_result(tmp_path, monkeypatch)
    assert not (out / "table1.html").exists()
    assert cli("report", "--out", out) == 0
    assert (out / "table1.html").is_file() and (out / "index.html").is_file()
    assert str(out / "index.html") in capsys.readouterr().out
    assert cli("report", "--out", tmp_path / "nowhere") == 2


def test_error_cells_show_their_message(tmp_path, monkeypatch):
    result, out = table1_result(tmp_path, monkeypatch)
    cell = next(c for c in result["cells"] if (c["row"], c["column"]) == ("DiT-XL", "flops"))
    cell.update(status="error", measured=None, reason="RuntimeError: fvcore <failed> (flops.py:12)")
    result["counts"]["error"] += 1
    html = render_suite(result, out).read_text(encoding="utf-8")
    assert 'class="cell st-error"' in html and "RuntimeError: fvcore &lt;failed&gt; (flops.py:12)" in html
