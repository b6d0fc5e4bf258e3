"""The scaling suite's section: the paper's scaling figure (FID and s/image ÷ DiT's against λ, one line per
size), the paper's points and ours, and realized speed-up per size at λ=0.5 against the paper's."""
from bench.definitions import METRIC_FID, METRIC_REALIZED, METRIC_S_PER_IMAGE_RATIO
from bench.report.lambda_figure import lambda_curves
from bench.results import INCONCLUSIVE, PASS
from dydit import registry

TITLE = "The scaling figure: FID and s/image vs λ per size"
HALF = 0.5  # the λ the issue judges realized speed-up at, per size


def points(suite_run):
    """[{size, lam, metric, paper, measured, status}] of every cell of the suite, λ = 1 for a DiT."""
    rows = {row.name: row for row in suite_run.suite.rows if row.model}
    out = []
    for cell in suite_run.cells:
        row = rows.get(cell["row"])
        if row is None:  # a cited row without a model
            continue
        lam = row.options.flops_target if row.options.flops_target is not None else 1.0
        out.append({"size": registry.entry(row.model).size, "lam": float(lam), "metric": cell["metric"],
                    "paper": cell["paper"], "measured": cell["measured"], "status": cell["status"]})
    return out


def curves(pts, metric, measured):
    """{size: [(λ, value)]} of one metric, the paper's or ours; a DiT's s/image ratio is 1 by definition."""
    out = {}
    for p in pts:
        value = p["measured"] if measured else p["paper"]
        if p["metric"] == metric and value is not None:
            out.setdefault(p["size"], []).append((p["lam"], value))
    if metric == METRIC_S_PER_IMAGE_RATIO:
        for size in out:
            out[size].append((1.0, 1.0))
    return out


def run(suite_run):
    pts = points(suite_run)
    if not pts:
        raise RuntimeError("no cell of the scaling suite ran")
    panels = []
    for metric, label in ((METRIC_FID, "FID"), (METRIC_S_PER_IMAGE_RATIO, "s/image ÷ its DiT's")):
        series = {f"paper {s}": c for s, c in curves(pts, metric, False).items()}
        series.update({f"ours {s}": c for s, c in curves(pts, metric, True).items()})
        panels.append((label, series))
    out = suite_run.ctx.scratch / "scaling-figures"
    figure = lambda_curves(out / "scaling-lambda.png", "Scaling: DiT-S/B/XL and DyDiT (paper solid, ours dashed)",
                           panels)
    rows = []
    for p in pts:
        if p["metric"] == METRIC_REALIZED and p["lam"] == HALF:  # the cell's verdict (its rounds' range included)
            row = {"name": f"{p['size']}: realized speed-up at λ=0.5 ({p['status']} in the table)",
                   "value": p["measured"], "unit": "", "ok": p["status"] == PASS,
                   "expected": f"≥ {p['paper']:.2f} (the paper's)"}
            if p["status"] == INCONCLUSIVE:
                row["inconclusive"] = True
            rows.append(row)
    if not rows:
        rows.append({"name": "realized speed-up at λ=0.5 measured for some size", "value": 0, "unit": "",
                     "ok": False, "expected": "≥ 1 size"})
    fids = sum(1 for p in pts if p["metric"] == METRIC_FID and p["measured"] is not None)
    note = ("Lines: the paper's (solid) and ours (dashed) where measured. s/image ratios here are whole 250-step "
            "DDPM loops on this machine with the routers calibrated to the paper's dynamic FLOPs; the paper's are "
            "V100 s/image. " + ("Our FID needs the trained checkpoints (skipped cells name the command that makes "
                                "each): none was measured here." if not fids else f"{fids} FID cells measured."))
    return {"title": TITLE, "note": note, "rows": rows,
            "figures": [{"title": "FID and s/image ÷ DiT's against λ, per size", "path": str(figure)}]}
