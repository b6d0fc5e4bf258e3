"""The assets full runs need (checkpoints, VAE, Inception weights, ADM reference batch): a manifest check.

Nothing is downloaded: every asset is a file under one root (`--assets DIR` or `$DYDIT_ASSETS`),
named in `suites/assets.toml` with its sha256 where one is public and where a user gets it. Hashing a
multi-GB file takes a while, so a verified hash is cached in `<root>/.sha256-cache.json`, keyed by the
file's relative path, size and mtime.
"""
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from dydit.errors import UserError
from dydit.fileio import sha256_file, write_json_atomic

ENV_VAR = "DYDIT_ASSETS"
DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "suites" / "assets.toml"
HASH_CACHE = ".sha256-cache.json"

PRESENT, MISSING, BAD_CHECKSUM = "present", "missing", "bad-checksum"

# asset names of suites/assets.toml that code refers to
VAE, INCEPTION, INCEPTION_CLEANFID = "vae-ft-ema", "inception-fidelity", "inception-cleanfid"
I3D = "i3d-fvd"  # StyleGAN-V's I3D: FVD's features (bench.metrics.fvd)


class AssetError(UserError, FileNotFoundError):
    """An asset is missing or fails its checksum; the message says what, where it goes, where to get it."""


@dataclass(frozen=True)
class AssetFile:
    """One acceptable form of an asset: a path relative to the root and its sha256 ("" = not public)."""
    path: str
    sha256: str = ""


@dataclass(frozen=True)
class Asset:
    """A named asset; `files` are alternatives (e.g. a diffusers folder or a single file), first found wins."""
    name: str
    description: str
    files: Tuple[AssetFile, ...]
    source: str
    note: str = ""
    make: str = ""  # the command that makes it, where no public file exists (e.g. a `bench train` preset)

    @property
    def path(self):
        """The preferred relative path (the first alternative)."""
        return self.files[0].path


@dataclass
class AssetStatus:
    """Result of checking one asset under a root."""
    name: str
    status: str  # PRESENT, MISSING or BAD_CHECKSUM
    path: Optional[Path]  # the file found, else where the preferred form goes
    message: str
    sha256: str = ""  # of the file found (when it was hashed)
    verified: bool = False  # True when a published sha256 matched
    extra: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.status == PRESENT


def load_manifest(path=None):
    """Reads the manifest TOML -> {name: Asset} (default: suites/assets.toml)."""
    path = Path(path) if path is not None else DEFAULT_MANIFEST
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        assets = {}
        for name, entry in data.get("assets", {}).items():
            files = tuple(AssetFile(f["path"], f.get("sha256", "").lower()) for f in entry["files"])
            if not files:
                raise AssetError(f"manifest {path}: asset {name!r} lists no files")
            assets[name] = Asset(name, entry.get("description", ""), files, entry.get("source", ""),
                                 entry.get("note", ""), entry.get("make", ""))
    except OSError as e:
        raise AssetError(f"manifest {path}: cannot read it ({e.strerror or e}): give suites/assets.toml or a copy "
                         f"of it") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise AssetError(f"manifest {path}: not an assets manifest ({type(e).__name__}: {e}): see "
                         f"suites/assets.toml for the format") from None
    return assets


def assets_root(cli_value=None):
    """The assets root: --assets DIR if given, else $DYDIT_ASSETS, else None (no root configured). A root that
    does not exist yet holds nothing (every asset is reported missing, with where it goes); a file is refused."""
    value = cli_value or os.environ.get(ENV_VAR)
    if not value:
        return None
    root = Path(value).expanduser()
    source = "--assets" if cli_value else f"${ENV_VAR}"
    if root.exists() and not root.is_dir():
        raise AssetError(f"{source} {root} is a file, not a folder: name the folder that holds the assets "
                         f"(`python -m bench assets` lists what goes where)")
    return root


def cached_sha256(path, root):
    """sha256 of path, reusing <root>/.sha256-cache.json while the file's size and mtime are unchanged."""
    path, root = Path(path), Path(root)
    stat = path.stat()
    key = os.path.relpath(path, root)
    cache_file = root / HASH_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if hit and hit.get("size") == stat.st_size and hit.get("mtime_ns") == stat.st_mtime_ns:
        return hit["sha256"]
    digest = sha256_file(path)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:  # the cache is an optimisation: a read-only root just means hashing again next time
        write_json_atomic(cache, cache_file)
    except OSError:
        pass
    return digest


def _where(asset, root):
    forms = " or ".join(str(Path(root) / f.path) if root else f"<assets>/{f.path}" for f in asset.files)
    return f"{forms}; get it from {asset.source}" + (f"; make it: {asset.make}" if asset.make else "")


def check_asset(name, root, manifest=None):
    """Checks one asset under root -> AssetStatus (present / missing / bad-checksum, with a message)."""
    manifest = manifest or load_manifest()
    if name not in manifest:
        raise KeyError(f"unknown asset {name!r}; the manifest lists: {', '.join(manifest)}")
    asset = manifest[name]
    if root is None:
        return AssetStatus(name, MISSING, None, f"{name} ({asset.description}): no assets root; pass "
                           f"--assets DIR or set ${ENV_VAR}, and put it at {_where(asset, None)}")
    root = Path(root)
    for form in asset.files:
        path = root / form.path
        if not path.is_file():
            continue
        if not form.sha256:
            return AssetStatus(name, PRESENT, path, f"{name}: {path} (no public sha256; not verified)")
        digest = cached_sha256(path, root)
        if digest != form.sha256:
            return AssetStatus(name, BAD_CHECKSUM, path,
                               f"{name}: {path} has sha256 {digest}, expected {form.sha256}; "
                               f"replace it with the file from {asset.source}", sha256=digest)
        return AssetStatus(name, PRESENT, path, f"{name}: {path} (sha256 verified)", digest, True)
    return AssetStatus(name, MISSING, root / asset.path,
                       f"{name} ({asset.description}) is missing: put it at {_where(asset, root)}")


def check_all(root, manifest=None):
    """AssetStatus of every asset in the manifest, in manifest order."""
    manifest = manifest or load_manifest()
    return [check_asset(name, root, manifest) for name in manifest]


def require(name, root, manifest=None):
    """Path of a present, verified asset; raises AssetError with the status message otherwise."""
    status = check_asset(name, root, manifest)
    if not status.ok:
        raise AssetError(status.message)
    return status.path


def given_or_asset(value, name, root, option, required=True):
    """The file a user gave with `option` (it must exist), else the asset `name` under the root; None where it is
    neither and not required. Raises AssetError naming the option or the asset."""
    if value is not None:
        if not Path(value).is_file():
            raise AssetError(f"{option} {value}: no such file")
        return value
    status = check_asset(name, root)
    if status.ok:
        return status.path
    if required:
        raise AssetError(status.message)
    return None


def resolve(value, root, manifest=None) -> str:
    """An asset name -> its verified path under the root; anything else is a path that must exist (absolute).
    Raises AssetError (a FileNotFoundError) saying which."""
    manifest = manifest if manifest is not None else load_manifest()
    if value in manifest:
        return str(require(value, root, manifest))
    if not Path(value).exists():
        raise AssetError(f"not found: {value} (neither a file nor an asset name of suites/assets.toml)")
    return str(Path(value).resolve())
