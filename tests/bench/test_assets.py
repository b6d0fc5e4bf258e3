"""The asset manifest and `python -m bench assets`: present, missing and wrong-checksum files."""
import hashlib
import json

import pytest

from bench import assets
from bench.__main__ import main

MANIFEST = """
[assets.good]
description = "a file with a published sha256"
files = [{{ path = "ckpt/good.pt", sha256 = "{sha}" }}]
source = "https://example.org/good.pt"

[assets.unhashed]
description = "no public sha256"
files = [{{ path = "ckpt/unhashed.pt", sha256 = "" }}]
source = "https://example.org/unhashed.pt"

[assets."two.forms"]
description = "a folder or a single file"
files = [{{ path = "vae/folder/weights.bin", sha256 = "" }}, {{ path = "vae/single.bin", sha256 = "" }}]
source = "example/repo"
"""
CONTENT = b"weights"


@pytest.fixture
def manifest_file(tmp_path):
    path = tmp_path / "assets.toml"
    path.write_text(MANIFEST.format(sha=hashlib.sha256(CONTENT).hexdigest()))
    return path


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "ckpt").mkdir(parents=True)
    return root


def test_shipped_manifest_names_every_asset_the_suites_use():
    manifest = assets.load_manifest()
    assert set(manifest) >= {"dit-xl-2", "dydit-xl-2-lambda0.7", "dydit-xl-2-lambda0.5", "sit-xl-2", "vae-ft-ema",
                             "inception-fidelity", "inception-cleanfid", "adm-ref-imagenet256"}
    for asset in manifest.values():
        assert asset.source and asset.files and asset.description
        assert all(len(f.sha256) in (0, 64) for f in asset.files)
    # the Inception file's name carries the first 8 hex digits of its sha256 (torch.hub convention)
    assert manifest["inception-fidelity"].files[0].sha256.startswith("6726825d")


def test_missing_file_says_where_it_goes_and_where_to_get_it(manifest_file, root):
    status = assets.check_asset("good", root, assets.load_manifest(manifest_file))
    assert status.status == assets.MISSING and not status.ok
    assert str(root / "ckpt" / "good.pt") in status.message and "https://example.org/good.pt" in status.message


def test_no_root_is_missing_with_how_to_set_one(manifest_file):
    status = assets.check_asset("good", None, assets.load_manifest(manifest_file))
    assert status.status == assets.MISSING and "--assets" in status.message and assets.ENV_VAR in status.message


def test_good_file_is_verified_and_its_hash_cached(manifest_file, root):
    (root / "ckpt" / "good.pt").write_bytes(CONTENT)
    manifest = assets.load_manifest(manifest_file)
    status = assets.check_asset("good", root, manifest)
    assert status.status == assets.PRESENT and status.verified and status.path == root / "ckpt" / "good.pt"
    cache = json.loads((root / assets.HASH_CACHE).read_text())
    assert cache["ckpt/good.pt"]["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    # same size and mtime: the cached hash is used (a poisoned cache entry proves it is read)
    cache["ckpt/good.pt"]["sha256"] = "0" * 64
    (root / assets.HASH_CACHE).write_text(json.dumps(cache))
    assert assets.check_asset("good", root, manifest).status == assets.BAD_CHECKSUM


def test_wrong_checksum_is_reported_and_a_changed_file_is_rehashed(manifest_file, root):
    path = root / "ckpt" / "good.pt"
    path.write_bytes(CONTENT)
    manifest = assets.load_manifest(manifest_file)
    assert assets.check_asset("good", root, manifest).ok
    path.write_bytes(b"truncated")  # new size and mtime: the cache entry no longer applies
    status = assets.check_asset("good", root, manifest)
    assert status.status == assets.BAD_CHECKSUM
    assert hashlib.sha256(b"truncated").hexdigest() in status.message and "example.org" in status.message
    with pytest.raises(assets.AssetError, match="expected"):
        assets.require("good", root, manifest)


def test_unhashed_file_is_present_but_not_verified_and_alternatives_are_found(manifest_file, root):
    manifest = assets.load_manifest(manifest_file)
    (root / "ckpt" / "unhashed.pt").write_bytes(b"x")
    status = assets.check_asset("unhashed", root, manifest)
    assert status.ok and not status.verified and "not verified" in status.message
    (root / "vae").mkdir()
    (root / "vae" / "single.bin").write_bytes(b"x")
    assert assets.check_asset("two.forms", root, manifest).path == root / "vae" / "single.bin"


def test_assets_root_from_flag_or_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path))
    assert assets.assets_root() == tmp_path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert assets.assets_root(str(elsewhere)) == elsewhere
    assert assets.assets_root(str(tmp_path / "missing")) == tmp_path / "missing"  # empty: every asset missing
    (tmp_path / "file").write_text("x")
    with pytest.raises(assets.AssetError, match="is a file, not a folder"):
        assets.assets_root(str(tmp_path / "file"))
    monkeypatch.delenv(assets.ENV_VAR)
    assert assets.assets_root() is None


def test_cli_reports_each_status_and_fails_when_anything_is_wrong(manifest_file, root, capsys):
    (root / "ckpt" / "good.pt").write_bytes(b"not the published file")
    code = main(["assets", "--root", str(root), "--manifest", str(manifest_file), "--json"])
    report = {a["name"]: a["status"] for a in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert report == {"good": "bad-checksum", "unhashed": "missing", "two.forms": "missing"}
    (root / "ckpt" / "good.pt").write_bytes(CONTENT)
    (root / "ckpt" / "unhashed.pt").write_bytes(b"x")
    (root / "vae" / "folder").mkdir(parents=True)
    (root / "vae" / "folder" / "weights.bin").write_bytes(b"x")
    assert main(["assets", "--root", str(root), "--manifest", str(manifest_file)]) == 0
    out = capsys.readouterr().out
    assert "sha256 verified" in out and "not verified" in out
