"""The mini report's section: the numbers behind the claims, judged where a check applies, and the figures
(the paper's Fig. 5 and Fig. 6 on the mini models, FLOPs vs mini-FID, generated digits)."""
import dataclasses
import math
import re

from bench.mini import figures
from dydit import registry

TITLE = "Mini reproduction: what the claims are made of"
CLASSIFIER_MIN_ACCURACY = 0.95  # below this the classifier's features are not a fair judge of digits


def _check(name, value, unit, ok, expected):
    return {"name": name, "value": value, "unit": unit, "ok": bool(ok), "expected": expected}


def _finite(name, value, unit=""):
    return _check(name, value, unit, value is not None and math.isfinite(value), "finite")


def run(suite_run):
    s = suite_run.record("mini")  # bench.mini.run.MiniRun
    if s is None or not s.measured:
        raise RuntimeError("no mini model was measured in this run (its cells were skipped or failed)")
    out = suite_run.ctx.scratch / "mini-figures"
    c = s.config
    rows = [_check("digit classifier: accuracy on the 1,000 held-out real digits", s.classifier_info["heldout_accuracy"],
                   "", s.classifier_info["heldout_accuracy"] >= CLASSIFIER_MIN_ACCURACY, f">= {CLASSIFIER_MIN_ACCURACY}")]
    dit = s.measured.get("DiT-Mini")
    rows.append(_check("mini-FID floor: 4,000 training digits vs the 1,000 held-out", s.floor, "",
                       dit is None or s.floor < dit["mini_fid"], "below the DiT's mini-FID"))
    figs, points, findings = [], [], []
    for name, ev in s.measured.items():
        rows.append(_finite(f"{name}: mini-FID", ev["mini_fid"]))
        rows.append(_finite(f"{name}: accuracy of generated digits", ev["accuracy"]))
        rows.append(_finite(f"{name}: FLOPs over the sampling run / DiT's", ev["flops_ratio"]))
        rows.append(_finite(f"{name}: sampling {len(ev['images'])} digits, seconds", ev["seconds_sampling"], "s"))
        points.append((name, ev["flops_ratio"], ev["mini_fid"]))
        slug = re.sub(r"[^a-z0-9.]+", "-", name.lower().replace("λ=", "lambda")).strip("-")
        figs.append({"title": f"{name}: generated digits (one row per class)",
                     "path": str(figures.digit_grid(out / f"{slug}-digits.png", name, ev["images"], ev["labels"]))})
        if "speed" in ev:
            sp = ev["speed"]
            for path in ("dit", "fast", "masked"):
                rows.append(_finite(f"{name}: s/image, {path} path ({sp['calls_timed']} calls timed at batch "
                                    f"{sp['batch']}, scaled to the schedule)", sp[path], "s/image"))
            # realized = speed-up / FLOPs reduction (DiT's / the fast path's, over the same timed calls)
            realized = (sp["dit"] / sp["fast"]) * sp["flops_ratio_timed"]
            rows.append(_finite(f"{name}: realized = speed-up / (DiT FLOPs / dynamic FLOPs) of the timed calls",
                                realized))
            if abs(ev["ink_vs_background"] - 1.0) < 1e-9:
                findings.append(f"{name}: every token's MLP ran at every step (MLP FLOPs per ink patch = per "
                                f"background patch): its token routers kept all tokens, and all of its savings "
                                f"came from width")
        if "widths" in ev:
            steps, heads, groups = ev["widths"]
            figs.append({"title": f"{name}: active heads and MLP channel groups per block and step (Fig. 5)",
                         "path": str(figures.widths_heatmaps(out / f"{slug}-widths.png", name, steps, heads, groups))})
            grid = int(round(ev["patch_flops"].shape[1] ** 0.5))
            figs.append({"title": f"{name}: MLP MACs per patch and step (Fig. 6), beside the digits",
                         "path": str(figures.patch_flops(out / f"{slug}-patches.png", name, ev["patch_flops"],
                                                         ev["images"], grid))})
    for name, (_, info) in s.models.items():  # DyDiT++: what each fine-tuning trained, and how long it took
        if "finetune_seconds" in info:
            rows.append(_finite(f"{name}: fine-tuning wall time ({info['trainable_parameters']:,} of "
                                f"{info['parameters']:,} parameters trained)", info["finetune_seconds"], "s"))
    figs.insert(0, {"title": "FLOPs vs mini-FID", "path": str(figures.flops_vs_fid(out / "flops-vs-fid.png", points,
                                                                                  s.floor))})
    dyn = [b for n, (_, b) in s.models.items() if n != "DiT-Mini"]
    flow = dataclasses.replace(c, model="SiT-Mini/2")
    note = (f"Models trained here (cache {s.cache_dir}): DiT-Mini {c.dit_steps} steps at batch {c.batch_size}; "
            f"each DyDiT fine-tuned {c.finetune_steps} steps ({100 * c.finetune_steps / c.dit_steps:g} % of the "
            f"DiT's) with the FLOPs loss"
            + (f"; SiT-Mini the same with flow matching, each DySiT fine-tuned {flow.finetune_steps} steps"
               if any(registry.entry(m).family == "SiT" for m in s.model_names.values()) else "")
            + ". Sampling: each row's sampler (the suite file) with classifier-free guidance; the dynamic models "
            f"through FastDyDiT. Build times: "
            + ", ".join(f"{n} {b.get('seconds', 0):.0f} s" for n, (_, b) in s.models.items())
            + (" (cached: 0 s means loaded)" if dyn else "") + ".")
    if findings:
        note += " Found here: " + "; ".join(findings) + "."
    return {"title": TITLE, "note": note, "rows": rows, "figures": figs}
