"""Result files: `reports/<suite>.json` with statuses, tolerances, provenance, and atomic writes."""
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from dydit.errors import UserError
from dydit.fileio import sha256_file, write_json_atomic  # noqa: F401  (write_json_atomic: re-exported)

SCHEMA = "dydit-bench-result/1"
SCHEMA_FAMILY = SCHEMA.rsplit("/", 1)[0] + "/"  # a result of any version; other schemas (device.json) are not results

# Cell statuses. Inconclusive: a value measured over rounds whose range straddles the edge of its band (the
# difference from the paper is within the measurement's own spread). Measured: a value the paper has no number
# for at this setting (the `ci` profile's FID-5K): only the regression gate judges it, against the runner's
# own calibrated baseline (bench.baseline).
PASS, FAIL, SKIPPED, ERROR, REFERENCE = "pass", "fail", "skipped", "error", "reference"
INCONCLUSIVE, MEASURED = "inconclusive", "measured"
STATUSES = (PASS, FAIL, INCONCLUSIVE, MEASURED, SKIPPED, ERROR, REFERENCE)

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
    out = dict.fromkeys(STATUSES, 0)  # results written before a status existed count 0 of it
    for cell in cells:
        out[cell["status"]] += 1
    return out


def summary_line(result: dict) -> str:
    n = result["counts"]
    sections = "".join(f"; {s['title'].split(' (')[0].lower()}: {s['status']}" for s in result.get("sections", []))
    return (f"{result['suite']} ({result['profile']}, {result['provenance']['device']}): "
            + ", ".join(f"{n.get(s, 0)} {s}" for s in STATUSES) + sections)


class ResultError(UserError, ValueError):
    """A result JSON that cannot be read: the message names the file and what to do."""


def load_result(path) -> dict:
    """Reads a result JSON written by `bench run`; ResultError naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResultError(f"{path}: cannot read a result ({type(e).__name__}: {e}): rerun its suite, or move the "
                          f"file away") from e
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultError(f"{path}: not a bench result (expected schema {SCHEMA!r}): rerun its suite with this "
                          f"version, or move the file away")
    problem = _malformed(data)
    if problem:
        raise ResultError(f"{path}: a malformed result ({problem}): rerun its suite, or move the file away")
    data["counts"] = {**dict.fromkeys(STATUSES, 0), **(data.get("counts") or {})}  # older results lack new statuses
    return data


def _malformed(data: dict) -> str:
    """What is wrong with a result's structure ('' if nothing): what compare, the gate and the report read."""
    if not isinstance(data.get("suite"), str) or not isinstance(data.get("provenance"), dict):
        return "no suite name or provenance"
    if not isinstance(data.get("cells"), list):
        return "no list of cells"
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or not all(isinstance(cell.get(k), str) for k in ("row", "column", "status")):
            return f"cell {i} lacks its row, column or status"
        if cell["status"] not in STATUSES:
            return f"cell {i} ({cell['row']} / {cell['column']}): unknown status {cell['status']!r}"
        measured = cell.get("measured")
        if measured is not None and (isinstance(measured, bool) or not isinstance(measured, (int, float))):
            return f"cell {i} ({cell['row']} / {cell['column']}): measured value {measured!r} is not a number"
        spread = cell.get("spread")
        if spread is not None and not (isinstance(spread, dict) and all(
                isinstance(spread.get(k), (int, float)) and not isinstance(spread.get(k), bool) for k in ("low", "high"))):
            return f"cell {i} ({cell['row']} / {cell['column']}): its spread {spread!r} lacks a numeric low and high"
    return ""


def result_files(out_dir):
    """The result JSON files in a reports folder. Fails closed: a JSON file there that cannot be parsed, or that
    says it is a result of another version (schema dydit-bench-result/N), is a ResultError (a gate must not pass
    by not reading a result); JSON without a schema of that family (device.json, someone else's) is not a result."""
    if not Path(out_dir).is_dir():
        raise ResultError(f"{out_dir} is not a folder of results: run a suite first (python -m bench run SUITE --out "
                          f"{out_dir})")
    found = []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ResultError(f"{path}: unreadable JSON in a reports folder ({type(e).__name__}: {e}): rerun its "
                              f"suite, or move the file away") from e
        if isinstance(data, dict) and str(data.get("schema", "")).startswith(SCHEMA_FAMILY):
            load_result(path)  # a result of another version: refused
            found.append(path)
    return found
