"""`python -m bench info MODEL`: params and static GFLOPs (fvcore, MACs, batch 1, no CFG doubling)."""
import json


def register(subparsers):
    p = subparsers.add_parser("info", help="params and GFLOPs of a model (e.g. DiT-XL/2, DyDiT-XL/2)")
    p.add_argument("model", help="model name, e.g. DiT-XL/2 or DyDiT-XL/2")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args):
    from dydit.flops import describe
    from dydit.registry import create_model
    try:
        model = create_model(args.model).eval()
    except KeyError as e:
        raise SystemExit(f"error: {e.args[0]}")
    info = describe(model, args.model)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['model']}: {info['params']:,} params ({info['params'] / 1e6:.2f} M)")
    print(f"  GFLOPs (fvcore, MACs, batch 1): {info['gflops']:.2f}   analytic: {info['gflops_analytic']:.2f}")
    if "complete_gflops" in info:
        print(f"  complete model (full width, routers off): {info['complete_gflops']:.2f} GFLOPs;"
              " the all-on figure above includes the routers")
    return 0
