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


def spread_rows(s):
    """The spread study this run's CFG scales and tolerances come from (suites/data/mini-spread.json): its CFG
    sweep on the validation digits, and whether it was made for this recipe and chose the scale sampled here."""
    from bench.mini import spread
    try:
        study = spread.load()
    except (OSError, ValueError) as e:
        return [_check(f"spread study: {spread.SPREAD_FILE.name} unreadable ({type(e).__name__}): run "
                       f"`nox -s mini-spread`", None, "", False, "present")]
    recipe = s.config.baseline_fields()  # the study measures the static models: the fine-tunes' fields may change
    same = {k: v for k, v in study["recipe"].items() if k in recipe} == recipe
    p = study["provenance"]
    rows = [_check(f"spread study made for this baseline recipe ({p['command']} at {str(p['commit'])[:10]}, "
                   f"{p['date']}, {p['seconds'] / 60:.0f} min)", None, "", same, "the static models' recipe of this run")]
    for family, fam in study["families"].items():
        sampled = s.provenance.get("sampling", {}).get(registry.entry(fam["model"]).label)
        if "provenance" in fam:  # a family's sweep added later (`--families SiT`): its own run
            q = fam["provenance"]
            rows.append(_check(f"{family}: its CFG sweep ({q['command']} at {str(q['commit'])[:10]}, {q['date']}, "
                               f"{q['seconds'] / 60:.0f} min)", None, "", True, "recorded"))
        for point in fam["cfg_sweep"]:
            chosen = point["cfg_scale"] == fam["cfg_scale"]
            rows.append(_check(f"{family}: CFG {point['cfg_scale']:g} on the validation digits: mini-FID "
                               f"{point['mini_fid']:.1f}, accuracy {point['accuracy']:.3f}"
                               + (" (chosen: " + study["rules"]["cfg"] + ")" if chosen else ""),
                               point["mini_fid"], "", math.isfinite(point["mini_fid"]), "finite"))
        if "tolerances" in fam:  # a family whose own spread was measured: what its rows' tolerances cite
            rows.append(_check(f"{family}: its own spread, {len(fam['evaluations'])} evaluations at N "
                               f"{fam['num_samples']} (training x sampling seeds): tolerances "
                               + ", ".join(f"{k} {v:g}" for k, v in fam["tolerances"].items()), None, "", True,
                               "recorded"))
        if sampled is not None:
            rows.append(_check(f"{family}: sampled at the study's CFG scale", sampled["cfg_scale"], "",
                               sampled["cfg_scale"] == fam["cfg_scale"], f"{fam['cfg_scale']:g}"))
            if "num_samples" in fam:  # its tolerances are the spread at that N: a smaller N spreads more
                rows.append(_check(f"{family}: sampled as many as the study's N", sampled["num_samples"], "",
                                   sampled["num_samples"] == fam["num_samples"], f"{fam['num_samples']}"))
    return rows


def run(suite_run):
    s = suite_run.record("mini")  # bench.mini.run.MiniRun
    if s is None or not s.measured:
        raise RuntimeError("no mini model was measured in this run (its cells were skipped or failed)")
    out = suite_run.ctx.scratch / "mini-figures"
    c = s.config
    rows = [_check("digit classifier: accuracy on the 1,000 held-out real digits", s.classifier_info["heldout_accuracy"],
                   "", s.classifier_info["heldout_accuracy"] >= CLASSIFIER_MIN_ACCURACY, f">= {CLASSIFIER_MIN_ACCURACY}")]
    rows += spread_rows(s)
    dit = s.measured.get("DiT-Mini")
    for n, floor in sorted(s.floors.items()):
        rows.append(_check(f"mini-FID floor: {n:,} training digits vs the 1,000 held-out", floor, "",
                           dit is None or len(dit["images"]) != n or floor < dit["mini_fid"],
                           "below the DiT's mini-FID"))
    if "frame_classifier" in s.provenance:  # the video rows' judge
        accuracy = s.provenance["frame_classifier"]["heldout_accuracy"]
        rows.append(_check("frame classifier (video mini): frame accuracy on the held-out clips", accuracy, "",
                           accuracy >= CLASSIFIER_MIN_ACCURACY, f">= {CLASSIFIER_MIN_ACCURACY}"))
    figs, points, findings = [], [], []
    for name, ev in s.measured.items():
        video = "mini_fvd" in ev
        what = "frames of the generated clips" if video else "generated digits"
        rows.append(_finite(f"{name}: mini-FID" + (" of the frames" if video else ""), ev["mini_fid"]))
        rows.append(_finite(f"{name}: mini-KID (torch-fidelity's unbiased KID on the same features)", ev["mini_kid"]))
        rows.append(_finite(f"{name}: accuracy of {what}", ev["accuracy"]))
        rows.append(_finite(f"{name}: FLOPs over the sampling run / its static model's", ev["flops_ratio"]))
        rows.append(_finite(f"{name}: sampling {len(ev['images'])} {'clips' if video else 'digits'}, seconds",
                            ev["seconds_sampling"], "s"))
        if video:
            rows.append(_finite(f"{name}: mini-FVD (frame features + motion statistics, vs the held-out clips)",
                                ev["mini_fvd"]))
            rows.append(_finite(f"{name}: clips whose digit moves as their class's direction says", ev["motion"]))
            rows.append(_finite(f"{name}: clips whose frames all read as one digit", ev["consistency"]))
        points.append((name, ev["flops_ratio"], ev["mini_fid"]))
        slug = re.sub(r"[^a-z0-9.]+", "-", name.lower().replace("λ=", "lambda")).strip("-")
        if video:
            from bench.mini.moving_digits import DIRECTIONS
            figs.append({"title": f"{name}: generated clips (one per digit, frames left to right)",
                         "path": str(figures.clip_grid(out / f"{slug}-clips.png", name, ev["images"], ev["labels"],
                                                       DIRECTIONS))})
        else:
            figs.append({"title": f"{name}: generated digits (one row per class)",
                         "path": str(figures.digit_grid(out / f"{slug}-digits.png", name, ev["images"],
                                                        ev["labels"]))})
        if "speed" in ev:
            sp = ev["speed"]
            for path in ("dit", "fast", "masked"):
                rows.append(_finite(f"{name}: s/image, {path} path ({sp['calls_timed']} calls on the sampled run's "
                                    f"inputs timed at batch {sp['batch']}, scaled to the schedule)", sp[path], "s/image"))
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
            grid = int(round(ev["patch_flops"].shape[-1] ** 0.5))
            if video:  # one clip, frame by frame
                figs.append({"title": f"{name}: MLP MACs per patch and step of each frame of its first clip (Fig. 6)",
                             "path": str(figures.patch_flops(out / f"{slug}-patches.png", name, ev["patch_flops"][0],
                                                             ev["images"][0], grid, examples=8, over="frames"))})
            else:
                figs.append({"title": f"{name}: MLP MACs per patch and step (Fig. 6), beside the digits",
                             "path": str(figures.patch_flops(out / f"{slug}-patches.png", name, ev["patch_flops"],
                                                             ev["images"], grid))})
    for name, (_, info) in s.models.items():  # DyDiT++: what each fine-tuning trained, and how long it took
        if "finetune_seconds" in info:
            threads = f", {info['threads']} thread(s)" if "threads" in info else ""  # trained ahead: beside others
            rows.append(_finite(f"{name}: fine-tuning wall time ({info['trainable_parameters']:,} of "
                                f"{info['parameters']:,} parameters trained{threads})", info["finetune_seconds"], "s"))
    figs.insert(0, {"title": "FLOPs vs mini-FID", "path": str(figures.flops_vs_fid(out / "flops-vs-fid.png", points,
                                                                                  s.floor(len(dit["images"])) if dit else None))})
    dyn = [b for n, (_, b) in s.models.items() if n != "DiT-Mini"]
    flow = dataclasses.replace(c, model="SiT-Mini/2")
    note = (f"Models trained here (cache {s.cache_dir}): DiT-Mini {c.dit_steps} steps at batch {c.batch_size}; "
            f"each DyDiT fine-tuned {c.finetune_steps} steps ({100 * c.finetune_steps / c.dit_steps:g} % of the "
            f"DiT's) with the FLOPs loss, and each control (+ FT) the same without routers or FLOPs loss"
            + (f"; SiT-Mini the same with flow matching, each DySiT fine-tuned {flow.finetune_steps} steps"
               if any(registry.entry(m).family == "SiT" for m in s.model_names.values()) else "")
            + "".join(sorted({f"; {registry.entry(registry.entry(m).static).label} {c.steps_for(m)} steps at batch "
                              f"{c.video_batch_size} clips of moving digits"
                              + (f" from {registry.entry(registry.entry(m).image_model).label}" if c.video_from_image else "")
                              + ", its DyLattes and control fine-tuned alike"
                              for m in s.model_names.values() if registry.entry(m).is_video}))
            + "".join(sorted({f"; {registry.entry(registry.entry(m).static).label} {c.steps_for(m)} steps (narrower, "
                              f"so more: MiniConfig.steps_for), its fine-tunes alike"
                              for m in s.model_names.values() if c.is_narrower(m)}))
            + ". Sampling: each row's sampler (the suite file) with classifier-free guidance; the dynamic models "
            "through FastDyDiT. Build times: "
            + ", ".join(f"{n} {b.get('seconds', 0):.0f} s" for n, (_, b) in s.models.items())
            + (" (cached: 0 s means loaded)" if dyn else "") + ".")
    timed = sorted({ev["speed"]["measured_at"] for ev in s.measured.values() if "measured_at" in ev.get("speed", {})})
    if timed:
        note += (f" Speed-ups are kept per machine and code ({s.timings.folder}): timed {', '.join(timed)}; "
                 "`bench run --retime` times them again.")
    if findings:
        note += " Found here: " + "; ".join(findings) + "."
    return {"title": TITLE, "note": note, "rows": rows, "figures": figs}
