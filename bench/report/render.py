"""HTML reports from result JSON: one page per suite laid out like the paper's table, plots beside it,
and reports/index.html listing every suite. Self-contained pages: no scripts, no network, work from file://."""
import shutil
from pathlib import Path
from typing import List, Optional

import jinja2
import pandas as pd
from markupsafe import Markup

from bench.results import (ERROR, FAIL, INCONCLUSIVE, MEASURED, PASS, REFERENCE, SKIPPED, STATUSES, fmt_value,
                           load_result, result_files)

TEMPLATES = Path(__file__).resolve().parent / "templates"
INDEX = "index.html"
STATUS_TEXT = {PASS: "✓ pass", FAIL: "✗ fail", INCONCLUSIVE: "? inconclusive", MEASURED: "• measured",
               SKIPPED: "– skipped", ERROR: "! error", REFERENCE: "cited"}
# matplotlib colours of the plot: the paper's points and ours
PAPER_COLOUR, OURS_COLOUR = "#5f6368", "#d93025"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["value"] = fmt_value
    env.filters["paper"] = lambda x: "—" if x is None else f"{x:g}"
    # section values are whatever a check reports: 4 significant digits keep 9.6e-11 and 0.0289 readable
    env.filters["number"] = lambda x: f"{x:.4g}" if isinstance(x, float) else "—" if x is None else x
    env.globals["STATUS_TEXT"] = STATUS_TEXT
    return env


def table_grid(result: dict) -> pd.DataFrame:
    """Rows x columns of the paper's table, each entry a result cell (None where the paper prints "-")."""
    rows = [r["name"] for r in result["rows"]]
    columns = [c["key"] for c in result["columns"]]
    if not result["cells"]:
        return pd.DataFrame(None, index=rows, columns=columns, dtype=object)
    frame = pd.DataFrame(result["cells"])
    frame["cell"] = result["cells"]
    grid = frame.pivot(index="row", columns="column", values="cell").reindex(index=rows, columns=columns)
    return grid.astype(object).where(grid.notna(), None)


def footnotes(grid: pd.DataFrame):
    """Numbers every distinct reason and erratum once: {text: n}, so each cell links to its note."""
    notes = {}
    for cell in grid.to_numpy().ravel():
        if cell is None or (cell["status"] == REFERENCE and cell["reason"] == "cited, not reproduced"):
            continue  # a cited row says so in its header; its cells need no note each
        for text in (cell["reason"], f"Erratum: {cell['erratum']}" if cell.get("erratum") else ""):
            if text:
                notes.setdefault(text, len(notes) + 1)
    return notes


def plot_points(result: dict, spec: dict) -> pd.DataFrame:
    """One line per row: the paper's (x, y) and ours, for one plot of the suite."""
    cells = pd.DataFrame(result["cells"])
    if cells.empty:
        return pd.DataFrame(columns=["row", "paper_x", "paper_y", "ours_x", "ours_y"])
    wide = cells.pivot(index="row", columns="column", values=["paper", "measured"])
    out = pd.DataFrame({"paper_x": wide.get(("paper", spec["x"])), "paper_y": wide.get(("paper", spec["y"])),
                        "ours_x": wide.get(("measured", spec["x"])), "ours_y": wide.get(("measured", spec["y"]))},
                       index=wide.index)
    order = [r["name"] for r in result["rows"] if r["name"] in out.index]
    return out.reindex(order).astype(float).rename_axis("row").reset_index()


def render_plot(result: dict, spec: dict, out_dir: Path) -> Optional[dict]:
    """PNG of spec["y"] against spec["x"]: the paper's points, ours where measured; None if nothing to plot."""
    from matplotlib.figure import Figure  # a bare Figure needs no pyplot or GUI backend
    points = plot_points(result, spec)
    paper = points.dropna(subset=["paper_x", "paper_y"])
    if paper.empty and points[["ours_x", "ours_y"]].dropna().empty:
        return None
    labels = {c["key"]: c["label"] for c in result["columns"]}
    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(paper.paper_x, paper.paper_y, color=PAPER_COLOUR, label="paper")
    for p in paper.itertuples():
        ax.annotate(p.row, (p.paper_x, p.paper_y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    both = points.dropna(subset=["ours_x", "ours_y"])
    ax.scatter(both.ours_x, both.ours_y, color=OURS_COLOUR, marker="D", label="ours (measured)")
    # where we measured x but not y (e.g. FLOPs on CPU, no FID): our x at the paper's y, hollow
    x_only = points[points.ours_x.notna() & points.ours_y.isna() & points.paper_y.notna()]
    ax.scatter(x_only.ours_x, x_only.paper_y, facecolors="none", edgecolors=OURS_COLOUR, marker="D", s=60,
               label=f"ours: measured {labels[spec['x']]}, paper {labels[spec['y']]}")
    if spec.get("log_x"):
        ax.set_xscale("log")
    ax.set(xlabel=labels[spec["x"]], ylabel=labels[spec["y"]], title=spec.get("title") or "")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    name = f"{result['suite']}_{spec['x']}_{spec['y']}.png"
    fig.savefig(out_dir / name)
    return {"file": name, "title": spec.get("title") or f"{labels[spec['y']]} vs {labels[spec['x']]}",
            "measured": len(both), "x_only": len(x_only)}


def section_figures(suite: str, section: dict, out_dir: Path) -> List[dict]:
    """A section's figure files, copied beside the report as <suite>_<name> (those still on disk)."""
    shown = []
    for fig in section.get("figures", []):
        source = Path(fig["path"])
        if source.is_file():
            name = f"{suite}_{source.name}"
            if source.resolve() != (out_dir / name).resolve():
                shutil.copyfile(source, out_dir / name)
            shown.append({"title": fig["title"], "file": name})
    return shown


def provenance_table(provenance: dict) -> List[tuple]:
    """Flattened provenance ("versions.torch", ...) as (key, value) pairs."""
    flat = pd.json_normalize(provenance, sep=".").iloc[0]
    return [(key, "—" if value is None else str(value)) for key, value in flat.items()]


def render_suite(result: dict, out_dir, env=None) -> Path:
    """Writes <out_dir>/<suite>.html (and its plots) from one result."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = env or environment()
    grid = table_grid(result)
    plots = [p for p in (render_plot(result, spec, out_dir) for spec in result.get("plots", [])) if p]
    sections = [{**sec, "figures": section_figures(result["suite"], sec, out_dir)} for sec in result.get("sections", [])]
    html = env.get_template("suite.html").render(
        r=result, rows=result["rows"], columns=result["columns"], grid=grid.to_dict("index"),
        notes=footnotes(grid), plots=plots, provenance=provenance_table(result["provenance"]),
        sections=sections, statuses=STATUSES)
    path = out_dir / f"{result['suite']}.html"
    path.write_text(html, encoding="utf-8")
    return path


MAX_NAMED = 4  # failing cells named in the index's summary of a suite; the rest are counted


def claims_summary(result: dict) -> str:
    """Which of the suite's judged cells and sections held here, in one line for the index."""
    judged = [c for c in result["cells"] if c["status"] in (PASS, FAIL)]
    failed = [f"{c['row']} / {c['column']}" for c in judged if c["status"] == FAIL]
    text = f"{len(judged) - len(failed)} of {len(judged)} judged cells held"
    undecided = sum(c["status"] == INCONCLUSIVE for c in result["cells"])
    if undecided:
        text += f" ({undecided} more inconclusive: within their own timing spread)"
    if failed:
        more = f" and {len(failed) - MAX_NAMED} more" if len(failed) > MAX_NAMED else ""
        text += f"; not: {', '.join(failed[:MAX_NAMED])}{more}"
    sections = [f"{s['title']}: {s['status']}" for s in result.get("sections", [])]
    return text + (f". Sections: {'; '.join(sections)}" if sections else "")


def index_frame(results: List[dict]) -> pd.DataFrame:
    """One line per suite: its last run, profile, device, commit, counts per status and what held."""
    lines = []
    for r in results:
        git = r["provenance"].get("git", {})
        commit = (git.get("commit") or "")[:10] + (" (dirty)" if git.get("dirty") else "")
        lines.append({"suite": r["suite"], "title": r["title"], "page": f"{r['suite']}.html",
                      "finished": r["provenance"].get("finished", ""), "profile": r["profile"],
                      "device": r["provenance"].get("device", ""), "commit": commit or "—", **r["counts"],
                      "summary": claims_summary(r)})
    columns = ["suite", "title", "page", "finished", "profile", "device", "commit", *STATUSES, "summary"]
    return pd.DataFrame(lines, columns=columns).sort_values("suite", kind="stable")


DEVICE_PARTS = {"calls": "Model calls: DiT vs DyDiT fast vs masked, per λ, batch and precision",
                "loop": "Whole DDIM loop (scheduler, CFG, VAE decode): s/image ratio per λ",
                "samplers": "Every sampler on the device", "mini_training": "Mini training on the device",
                "compile": "torch.compile / CUDA graphs of the attention core (off by default)"}


def render_device(check: dict, out_dir, env=None) -> Path:
    """Writes <out_dir>/device.html from a device check (bench.device_check)."""
    env = env or environment()
    parts = []
    for name, part in check["parts"].items():
        frame = pd.DataFrame(part["rows"]).map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)
        parts.append({"title": DEVICE_PARTS.get(name, name), "seconds": part["seconds"],
                      "table": Markup(frame.to_html(index=False, na_rep="—", escape=True, border=0))})
    html = env.get_template("device.html").render(fp=check["fingerprint"], quick=check["quick"],
                                                  seconds=check["seconds"], parts=parts)
    path = Path(out_dir) / "device.html"
    path.write_text(html, encoding="utf-8")
    return path


def render_index(out_dir, env=None) -> Path:
    """Writes <out_dir>/index.html from every result JSON in out_dir."""
    out_dir = Path(out_dir)
    results = [load_result(p) for p in result_files(out_dir)]
    env = env or environment()
    frame = index_frame(results)
    html = env.get_template("index.html").render(suites=frame.to_dict("records"), statuses=STATUSES,
                                                 totals=frame[list(STATUSES)].sum().to_dict(),
                                                 device=(out_dir / "device.html").is_file())
    path = out_dir / INDEX
    path.write_text(html, encoding="utf-8")
    return path


def render_all(out_dir) -> List[Path]:
    """Re-renders every suite page and the index from the result JSON in out_dir."""
    env = environment()
    pages = [render_suite(load_result(p), out_dir, env) for p in result_files(out_dir)]
    return pages + [render_index(out_dir, env)]
