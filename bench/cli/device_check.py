"""`python -m bench device-check`: what only a GPU can tell, measured in minutes (bench/device_check.py).

    python -m bench device-check                          # on CUDA: DyDiT-XL/2; writes reports/device.{json,html}
    python -m bench device-check --device cpu --quick     # the same code at tiny size (what the tests run)
"""
import sys

from dydit.errors import UserError


def register(subparsers):
    p = subparsers.add_parser("device-check", help="one command that measures on a CUDA GPU what a CPU cannot: "
                                                   "call and loop speed-ups per precision, samplers, mini training")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when present, else cpu")
    p.add_argument("--quick", action="store_true", help="tiny models and steps: the code path in seconds, not the "
                                                        "paper's numbers (the default on a CPU is the full size)")
    p.add_argument("--out", default="reports", help="folder for device.json and device.html (default reports)")
    p.set_defaults(func=run)


def run(args):
    import torch

    from bench import device_check, preflight
    from bench.report.render import render_device, render_index
    from dydit.fileio import write_json_atomic
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA GPU here (torch.cuda.is_available() is False): run it "
                        "on a GPU machine, or --device cpu --quick for the code path")
    out = preflight.writable_folder(args.out, "--out")
    if device == "cpu" and not args.quick:
        print("note: a full-size device check on a CPU takes hours (DyDiT-XL/2); --quick runs it at tiny size",
              file=sys.stderr)
    check = device_check.run_check(device, args.quick, out / "work", log=lambda m: print(m, file=sys.stderr, flush=True))
    path = write_json_atomic(check, out / device_check.DEVICE_JSON)
    page = render_device(check, out)
    index = render_index(out)
    failed = [name for name, part in check["parts"].items() if any("error" in row for row in part["rows"])]
    print(f"device check on {check['fingerprint']['device']} ({check['seconds']:.0f} s): "
          + (f"errors in {', '.join(failed)}" if failed else "every part ran"))
    print(f"results: {path.resolve()}\nreport:  {page.resolve()}\nindex:   {index.resolve()}")
    return 1 if failed else 0  # a part that raised is a finding of the check: exit 1, its reason in the report
