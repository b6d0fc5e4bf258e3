"""`python -m bench evaluate SAMPLES.npz --ref REF.npz --json`: FID, sFID, IS, precision, recall, KID of a batch.

    python -m bench evaluate samples/dit-xl/samples.npz --ref VIRTUAL_imagenet256_labeled.npz --json

Inception weights come from a local file (--inception PATH, or the inception-fidelity asset under
$DYDIT_ASSETS); nothing is downloaded. Prints the metrics (JSON with --json, as torch-fidelity's CLI).
"""
import json
from pathlib import Path

from bench import assets, preflight
from bench.assets import INCEPTION, INCEPTION_CLEANFID
from bench.cli import args as types
from dydit.errors import UserError


def register(subparsers):
    p = subparsers.add_parser("evaluate", help="metrics of an ADM .npz sample batch against a reference",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("samples", help="ADM-format .npz (arr_0: uint8 N x H x W x 3), e.g. from `bench sample`")
    p.add_argument("--ref", required=True, help="reference: an ADM batch .npz (with mu/sigma) or a folder of images")
    p.add_argument("--inception", default=None,
                   help=f"torch-fidelity Inception weights file (default: the {INCEPTION} asset)")
    p.add_argument("--cleanfid-inception", default=None,
                   help=f"clean-fid's inception-2015-12-05.pt for the second FID backend (default: the "
                        f"{INCEPTION_CLEANFID} asset if present; 'none' to skip)")
    p.add_argument("--assets", default=None, help=f"assets root (default: ${assets.ENV_VAR})")
    p.add_argument("--device", type=types.device, default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cache-dir", default=None, help="where reference features are cached (default: beside --ref)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args):
    import torch
    from bench.metrics.evaluate import evaluate_samples
    root = assets.assets_root(args.assets)
    inception = assets.given_or_asset(args.inception, INCEPTION, root, "--inception")
    cleanfid = None if args.cleanfid_inception == "none" else \
        assets.given_or_asset(args.cleanfid_inception, INCEPTION_CLEANFID, root, "--cleanfid-inception", required=False)
    if cleanfid is not None:  # checked before an hour of feature extraction, not after
        from bench.metrics.cleanfid import verify
        verify(cleanfid)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ref = Path(args.ref)
    cache_dir = Path(args.cache_dir) if args.cache_dir else (ref if ref.is_dir() else ref.parent)
    # checked before the feature extraction, the default (beside --ref, often a read-only asset folder) too
    preflight.writable_folder(cache_dir, "--cache-dir" if args.cache_dir else
                              "--cache-dir (default: the folder of --ref)")
    results = evaluate_samples(args.samples, args.ref, inception, device, cleanfid, cache_dir, verbose=not args.json)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            if isinstance(value, float):
                print(f"{key:<14} {value:.4f}")
    return 0
