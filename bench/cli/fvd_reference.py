"""`python -m bench fvd-reference`: the real clips' I3D features an FVD cell is measured against.

    python -m bench fvd-reference --frames UCF101_FRAMES --out $DYDIT_ASSETS/reference/ucf101-fvd2048_16f.npz

--frames: one folder per video of its frames as images (`ffmpeg -i v.avi UCF101_FRAMES/v/%05d.jpg`). The clips
follow Latte's fvd2048_16f (bench.metrics.fvd: 2,048 clips of 16 frames, every 3rd, 256 x 256, mirrored copies in the
draw); the I3D is StyleGAN-V's (--i3d PATH, or the i3d-fvd asset). Writes `features` (N, 400) and beside them the
protocol and the I3D's sha256, which an FVD checks its clips and its I3D against.
"""
import json
from pathlib import Path

from bench import assets, preflight
from bench.assets import I3D
from bench.cli import args as types
from bench.definitions import FVD_CLIPS, FVD_FRAMES, FVD_RESOLUTION, FVD_STRIDE
from dydit.errors import UserError
from dydit.fileio import sha256_file


def register(subparsers):
    p = subparsers.add_parser("fvd-reference", help="the real clips' I3D features for FVD (from frame folders)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", required=True, help="folder with one folder of frame images per video")
    p.add_argument("--out", required=True, help="the reference .npz to write")
    p.add_argument("--i3d", default=None, help=f"StyleGAN-V's i3d_torchscript.pt (default: the {I3D} asset)")
    p.add_argument("--assets", default=None, help=f"assets root (default: ${assets.ENV_VAR})")
    p.add_argument("--clips", type=types.positive_int, default=FVD_CLIPS, help=f"default {FVD_CLIPS}")
    p.add_argument("--clip-frames", type=types.positive_int, default=FVD_FRAMES, help=f"default {FVD_FRAMES}")
    p.add_argument("--stride", type=types.positive_int, default=FVD_STRIDE,
                   help=f"take every STRIDE-th frame (default {FVD_STRIDE}, UCF-101's)")
    p.add_argument("--resolution", type=types.positive_int, default=FVD_RESOLUTION, help=f"default {FVD_RESOLUTION}")
    p.add_argument("--seed", type=types.non_negative_int, default=0,
                   help="draws the videos and each clip's first frame (default 0)")
    p.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="draw from the videos only, not their mirrored copies too (Latte's tools mirror)")
    p.add_argument("--device", type=types.device, default=None, help="cuda or cpu (default: cuda when available)")
    p.set_defaults(func=run)


def run(args):
    import numpy as np
    import torch
    from bench.metrics import fvd
    if not Path(args.frames).is_dir():
        raise UserError(f"--frames {args.frames}: no such folder (one folder of frame images per video)")
    i3d = assets.given_or_asset(args.i3d, I3D, assets.assets_root(args.assets), "--i3d")
    out = Path(args.out)
    if out.exists() and not out.is_file():
        raise UserError(f"--out {out} is not a file: name the .npz to write")
    tmp = out.with_name(out.name + ".tmp.npz")
    preflight.writable_folder(out.parent, "--out", names=[out.name, tmp.name])
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        detector = fvd.load_i3d(i3d, device)
        features, videos = fvd.real_clip_features(args.frames, detector, args.clips, args.clip_frames, args.stride,
                                                  args.resolution, args.seed, args.mirror, device)
    except ValueError as e:  # no video folders, too few long videos, an unreadable frame, not an I3D
        raise UserError(str(e)) from None
    protocol = {"frames": str(args.frames), "clips": len(videos), "clip_frames": args.clip_frames,
                "stride": args.stride, "resolution": args.resolution, "seed": args.seed, "mirror": args.mirror,
                "i3d": str(i3d), "i3d_sha256": sha256_file(i3d), "i3d_kwargs": fvd.I3D_KWARGS,
                "tf32": False, "videos": videos}
    np.savez(tmp, **{fvd.REFERENCE_KEY: features, fvd.PROTOCOL_KEY: np.array(json.dumps(protocol))})
    tmp.replace(out)
    print(f"fvd-reference: {len(videos)} clips of {args.clip_frames} frames -> {out} (features {features.shape})")
    return 0
