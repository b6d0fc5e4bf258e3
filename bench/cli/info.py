"""`python -m bench info MODEL`: params and static GFLOPs (fvcore, MACs, batch 1, no CFG doubling).

    python -m bench info DyDiT-XL/2
    python -m bench info --list          # every name of the registry
"""
import json

from bench.cli import args as types


def register(subparsers):
    p = subparsers.add_parser("info", help="params and GFLOPs of a model (e.g. DiT-XL/2, DyDiT-XL/2)")
    p.add_argument("model", nargs="?", type=types.model_name(), help="model name, e.g. DiT-XL/2 or DyDiT-XL/2")
    p.add_argument("--list", action="store_true", help="list the registry's model names and exit")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args):
    from dydit import registry
    from dydit.errors import UserError
    if args.list:
        for name, entry in registry.MODELS.items():
            print(f"{name:<18} {entry.family}, {'dynamic' if entry.is_dynamic else 'static'}, size {entry.size}, "
                  f"patch {entry.patch}" + (" (mini: 16 x 16 digits, 10 classes)" if entry.is_mini else ""))
        return 0
    if args.model is None:
        raise UserError("info: name a model (e.g. DiT-XL/2), or --list")
    from dydit.flops import describe
    info = describe(registry.create_model(args.model).eval(), args.model)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['model']}: {info['params']:,} params ({info['params'] / 1e6:.2f} M)")
    print(f"  GFLOPs (fvcore, MACs, batch 1): {info['gflops']:.2f}   analytic: {info['gflops_analytic']:.2f}")
    if "complete_gflops" in info:
        print(f"  complete model (full width, routers off): {info['complete_gflops']:.2f} GFLOPs;"
              " the all-on figure above includes the routers")
    return 0
