"""The scaling suite's section: the paper's scaling figure (FID and s/image ÷ DiT's against λ, one line per
size), the paper's points and ours, and realized speed-up per size at λ=0.5 against the paper's."""
import math
from pathlib import Path

from bench.definitions import METRIC_FID, METRIC_REALIZED, METRIC_S_PER_IMAGE_RATIO
from bench.report.lambda_figure import lambda_curves

TITLE = "The scaling figure: FID and s/image vs λ per size"
HALF = 0.5  # the λ the issue judges realized speed-up at, per size


def size_of(model: str) -> str:
    """'DyDiT-XL/2' -> 'XL'."""
    return model.split("/")[0].split("-", 1)[1]


def points(ctx):
    """[{size, lam, metric, paper, measured, status}] of every cell of the suite, λ = 1 for a DiT."""
    specs = ctx.cache.get("suite_rows", {})
    out = []
    for cell in ctx.cache.get("suite_results", []):
        spec = specs.get(cell["row"])
        if spec is None:  # a row with only cited cells
            continue
        lam = spec["options"].get("flops_target", 1.0)
        out.append({"size": size_of(spec["model"]), "lam": float(lam), "metric": cell["metric"],
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


def run(ctx):
    pts = points(ctx)
    if not pts:
        raise RuntimeError("no cell of the scaling suite ran")
    panels = []
    for metric, label in ((METRIC_FID, "FID"), (METRIC_S_PER_IMAGE_RATIO, "s/image ÷ its DiT's")):
        series = {f"paper {s}": c for s, c in curves(pts, metric, False).items()}
        series.update({f"ours {s}": c for s, c in curves(pts, metric, True).items()})
        panels.append((label, series))
    out = Path(ctx.work_dir or "reports/work") / "scaling-figures"
    figure = lambda_curves(out / "scaling-lambda.png", "Scaling: DiT-S/B/XL and DyDiT (paper solid, ours dashed)",
                           panels)
    rows = []
    for p in pts:
        if p["metric"] == METRIC_REALIZED and p["lam"] == HALF:
            ok = p["measured"] is not None and math.isfinite(p["measured"]) and p["measured"] >= p["paper"] - 0.005
            rows.append({"name": f"{p['size']}: realized speed-up at λ=0.5 ({p['status']} in the table)",
                         "value": p["measured"], "unit": "", "ok": bool(ok), "expected": f"≥ {p['paper']:.2f} (the paper's)"})
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
