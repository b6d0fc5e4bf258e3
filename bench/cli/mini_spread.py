"""`python -m bench mini-spread`: the mini's spread study (bench/mini/spread.py), written where the suites cite it.

    python -m bench mini-spread                  # suites/data/mini-spread.json, models cached in reports/work
    python -m bench mini-spread --out /tmp/s.json --work-dir /tmp/w

    python -m bench mini-spread --families SiT   # only SiT's CFG sweep, added to the committed DiT study
    python -m bench mini-spread --families Latte # the video mini's CFG sweep (validation clips), added likewise
    python -m bench mini-spread --families FLUX  # the text-to-image mini's CFG sweep (validation prompts) and its own
                                                 # spread (3 FLUX-Minis, held-out prompts), added likewise

Interrupted, it resumes where it stopped (models cached, evaluations in WORK_DIR/mini-spread-progress.json).
"""
import sys
from pathlib import Path

from dydit.errors import UserError


def register(subparsers):
    p = subparsers.add_parser("mini-spread", help="the mini's spread study: CFG per family on validation digits, "
                                                  "seed and thread spread, the quality tolerances (hours on a CPU)")
    p.add_argument("--out", default=None, help="result JSON (default: suites/data/mini-spread.json, committed)")
    p.add_argument("--work-dir", default="reports/work",
                   help="scratch folder; models are cached in WORK_DIR/mini-models, shared with `bench run` (default "
                        "reports/work)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when present")
    p.add_argument("--families", default="DiT,SiT", type=_families,
                   help="comma-separated: DiT (the spread, CFG and N: what the digits minis' tolerances cite), FLUX "
                        "(the same for the text-to-image mini), SiT and Latte (their CFG sweeps) (default DiT,SiT); "
                        "without DiT the families are added to the study already in --out")
    p.set_defaults(func=run)


def _families(text):
    import argparse

    from bench.definitions import SPREAD_FAMILIES, SPREAD_FAMILY
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or not set(names) <= set(SPREAD_FAMILIES) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(SPREAD_FAMILIES)} (e.g. DiT,SiT), got {text!r}")
    return tuple(sorted(names, key=lambda n: n != SPREAD_FAMILY))  # the spread family first: it is done first


def run(args):
    from bench import preflight
    from bench.measure.base import Context
    from bench.mini import build, spread
    from bench.mini.config import MiniConfig
    out = Path(args.out) if args.out else spread.SPREAD_FILE
    if out.exists() and not out.is_file():
        raise UserError(f"--out {out} is not a file: name a .json file")
    preflight.writable_folder(out.parent, "--out", names=[out.name])
    work_dir = preflight.writable_folder(args.work_dir, "--work-dir")
    config = MiniConfig(device=args.device)  # None: CUDA when present
    try:
        build.device_of(config)
    except ValueError as e:
        raise UserError(str(e)) from None
    existing, previous = None, None
    if "DiT" not in args.families:  # a sweep added to the study in --out, which must be this recipe's
        existing = spread.existing_study(out, config)
    elif out.is_file():  # a new DiT study: the families studied before for this recipe are kept beside it
        try:
            previous = spread.existing_study(out, config)
        except UserError as e:
            print(f"note: the families of {out} are not kept ({e})", file=sys.stderr)
    command = "python -m bench mini-spread" + (f" --device {args.device}" if args.device else "") + \
        (f" --families {','.join(args.families)}" if args.families != ("DiT", "SiT") else "")
    progress = work_dir / "mini-spread-progress.json"
    try:
        study = spread.run_study(config, build.cache_dir(Context(work_dir=work_dir)), families=args.families,
                                 command=command, progress_file=progress)
    except KeyboardInterrupt:
        print(f"interrupted: the trained models and finished evaluations are kept ({progress}); run the same "
              f"command again to resume", file=sys.stderr)
        return 130
    if existing is not None:
        study = spread.merge(existing, study)
    elif previous is not None:
        study = spread.carry_over(previous, study)
    print(f"spread study: {spread.write(study, out)}")
    for family, fam in study["families"].items():
        print(f"  {family}: CFG {fam['cfg_scale']:g}" + (f", N {fam['num_samples']}, tolerances {fam['tolerances']}"
                                                        if "tolerances" in fam else ""))
    return 0
