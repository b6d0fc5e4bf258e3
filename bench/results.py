"""Result files: `reports/<suite>.json` with statuses, tolerances, provenance, and atomic writes."""
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from dydit.fileio import sha256_file, write_json_atomic  # noqa: F401  (write_json_atomic: re-exported)

SCHEMA = "dydit-bench-result/1"

# Cell statuses.
PASS, FAIL, SKIPPED, ERROR, REFERENCE = "pass", "fail", "skipped", "error", "reference"
STATUSES = (PASS, FAIL, SKIPPED, ERROR, REFERENCE)

REPO_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("numpy", "fvcore", "diffusers", "torch-fidelity", "clean-fid")


def fmt_value(x) -> str:
    """Two decimals, three below 1 (precision/recall): how measured values are shown and explained."""
    if x is None:
        return "—"
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args):
    out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()


def git_state() -> dict:
    """Commit and dirty flag of the checkout that ran (None where this is not a git checkout)."""
    try:
        # untracked files count as dirty: a new measurement module changes what runs
        return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain"))}
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_name(device: str) -> str:
    """'cuda: <GPU name>' or 'cpu: <CPU model>': what timing comparisons must match on."""
    import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()}"


def provenance(suite_path, ctx, argv, started: str, measurements: dict) -> dict:
    """Everything needed to tell two runs apart: code, suite file, software, device, precision, seeds, time."""
    import torch
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git": git_state(),
        "suite_file": str(suite_path),
        "suite_sha256": sha256_file(suite_path),
        "versions": versions,
        "platform": platform.platform(),
        "device": device_name(ctx.device),
        "cuda_available": torch.cuda.is_available(),
        # TF32 changes FID slightly (DiT README: 2.21 at fp32 vs 2.27), so it is part of every result
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32,
                 "float32_matmul_precision": torch.get_float32_matmul_precision()},
        "seeds": {"global_seed": ctx.seed},
        "assets_root": str(ctx.assets_root) if ctx.assets_root else None,
        "started": started,
        "finished": utc_now(),
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *argv]),
        "measurements": measurements,  # what measurements and sections recorded: the mini's config, models, ...
    }


def counts(cells) -> dict:
    """Cells per status, every status present (0 where none)."""
    out = dict.fromkeys(STATUSES, 0)
    for cell in cells:
        out[cell["status"]] += 1
    return out


def summary_line(result: dict) -> str:
    n = result["counts"]
    sections = "".join(f"; {s['title'].split(' (')[0].lower()}: {s['status']}" for s in result.get("sections", []))
    return (f"{result['suite']} ({result['profile']}, {result['provenance']['device']}): "
            + ", ".join(f"{n[s]} {s}" for s in STATUSES) + sections)


def load_result(path) -> dict:
    """Reads a result JSON written by `bench run`; ValueError naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read a result: {e}") from e
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a bench result (expected schema {SCHEMA!r})")
    return data


def result_files(out_dir):
    """The result JSON files in a reports folder (other JSON there is ignored)."""
    found = []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            load_result(path)
        except ValueError:
            continue
        found.append(path)
    return found
