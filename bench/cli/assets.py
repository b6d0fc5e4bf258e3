"""`python -m bench assets [--root DIR]`: which assets of suites/assets.toml are present, missing or wrong."""
import json

from bench import assets


def register(subparsers):
    p = subparsers.add_parser("assets", help="check the assets full runs need (present / missing / bad checksum)")
    p.add_argument("--root", "--assets", dest="root", default=None,
                   help=f"assets root (default: ${assets.ENV_VAR})")
    p.add_argument("--manifest", default=None, help="manifest TOML (default: suites/assets.toml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args):
    root = assets.assets_root(args.root)
    statuses = assets.check_all(root, assets.load_manifest(args.manifest))
    if args.json:
        print(json.dumps([{"name": s.name, "status": s.status, "path": str(s.path) if s.path else None,
                           "verified": s.verified, "message": s.message} for s in statuses], indent=1))
    else:
        print(f"assets root: {root if root else f'(none: pass --root DIR or set ${assets.ENV_VAR})'}")
        width = max(len(s.name) for s in statuses)
        for s in statuses:
            print(f"{s.name:<{width}}  {s.status:<12}  {s.message}")
    # exit status 1 when anything is wrong, so scripts can gate a full run on it
    return 0 if all(s.ok for s in statuses) else 1
