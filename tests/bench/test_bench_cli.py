"""End to end: a tiny real suite (DiT-S/8 params and FLOPs measured for real) through run, ls, report, compare."""
import json
import re
import subprocess
import sys

from bench.results import ERROR, FAIL, PASS, REFERENCE, SKIPPED
from bench.suite import SUITES_DIR
from tests.bench.runner_helpers import cli, write

TINY = '''\
[suite]
name = "tiny"
title = "Tiny: DiT-S/8 and DyDiT-S/8"

[suite.sampler]
name = "ddpm"
steps = 250

[[columns]]
key = "params"
label = "Params (M)"
metric = "params"
profiles = ["smoke", "full"]
tolerance = { abs = 0.01, why = "exact count, printed to two decimals" }

[[columns]]
key = "flops"
label = "FLOPs (G)"
metric = "gflops"
profiles = ["smoke", "full"]
tolerance = { window = [-0.5, 1.0], why = "printed as whole GFLOPs" }

[[columns]]
key = "fid"
label = "FID"
metric = "fid"
profiles = ["full"]
device = "cuda"
assets = ["checkpoint", "vae-ft-ema", "inception-fidelity", "adm-ref-imagenet256"]
tolerance = { abs = 0.1, why = "seed noise" }

[[plots]]
x = "flops"
y = "fid"

[[rows]]
name = "DiT-S/8"
model = "DiT-S/8"
checkpoint = "dit-xl-2"
cells = { params = 33.0, flops = 0.36, fid = 30.0 }

[[rows]]
name = "DyDiT-S/8 λ=0.5"
model = "DyDiT-S/8"
checkpoint = "dydit-xl-2-lambda0.5"

[rows.cells]
params = 33.31
fid = 31.0

[rows.cells.flops]
paper = 0.2
metric = "gflops_dynamic"
profiles = ["full"]
assets = ["checkpoint"]
tolerance = { rel = 0.01, why = "run average" }

[[rows]]
name = "Cited"
reference = true
cells = { params = 1, flops = 2, fid = 3 }
'''


def test_run_writes_json_html_index_and_statuses(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DYDIT_ASSETS", raising=False)
    suite, out = write(tmp_path, TINY, "tiny.toml"), tmp_path / "reports"
    assert cli("run", suite, "--out", out, "--assets", tmp_path / "assets") == 0
    printed = capsys.readouterr().out
    assert "tiny (auto, cpu: " in printed and f"{(out / 'index.html').resolve()}" in printed
    # before it starts: the plan, cells that run / skip / are cited and why
    assert "cell(s) will run" in printed and "needs a CUDA GPU" in printed
    for name in ("tiny.json", "tiny.html", "index.html", "tiny_flops_fid.png"):
        assert (out / name).is_file(), name
    result = json.loads((out / "tiny.json").read_text())
    assert result["suite"] == "tiny" and result["profile"] == "auto"
    cells = {(c["row"], c["column"]): c for c in result["cells"]}
    dit = cells[("DiT-S/8", "params")]
    assert (dit["status"], round(dit["measured"], 6), dit["unit"]) == (FAIL, 33.14816, "M")  # 33.0 ± 0.01
    assert cells[("DyDiT-S/8 λ=0.5", "params")]["status"] == PASS
    assert cells[("DiT-S/8", "flops")]["status"] == PASS and 0 < cells[("DiT-S/8", "flops")]["measured"] < 1
    dynamic = cells[("DyDiT-S/8 λ=0.5", "flops")]
    assert dynamic["status"] == SKIPPED and "dydit-xl-2-lambda0.5 (missing: " in dynamic["reason"]
    fid = cells[("DiT-S/8", "fid")]
    assert fid["status"] == SKIPPED and "a CUDA GPU" in fid["reason"] and "adm-ref-imagenet256" in fid["reason"]
    assert cells[("Cited", "fid")]["status"] == REFERENCE
    assert result["counts"][ERROR] == 0
    assert result["provenance"]["command"].endswith(f"run {suite} --profile auto --out {out} --seed 0 "
                                                    f"--assets {tmp_path / 'assets'}")
    assert result["assets"]["dit-xl-2"]["status"] == "missing"

    # the same run against itself as baseline: no regression; a worse baseline-relative run: exit 1
    baseline = tmp_path / "baseline.json"
    result["cells"][0]["status"], result["cells"][0]["measured"] = PASS, 33.0  # pretend it passed before
    baseline.write_text(json.dumps(result))
    assert cli("run", suite, "--out", out, "--assets", tmp_path / "assets", "--baseline", out / "tiny.json") == 0
    assert cli("run", suite, "--out", out, "--assets", tmp_path / "assets", "--baseline", baseline) == 1
    assert "REGRESSION DiT-S/8 / params: status pass -> fail" in capsys.readouterr().out

    # --profile full on a CPU machine: it still runs; the GPU cells are skipped naming the device
    assert cli("run", suite, "--profile", "full", "--out", out, "--assets", tmp_path / "assets") == 0
    full = {(c["row"], c["column"]): c for c in json.loads((out / "tiny.json").read_text())["cells"]}
    assert full[("DiT-S/8", "fid")]["reason"].startswith("missing here: a CUDA GPU")
    assert full[("DiT-S/8", "params")]["status"] == FAIL


def test_ls_lists_rows_and_what_each_profile_runs_here(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DYDIT_ASSETS", raising=False)
    assert cli("ls", write(tmp_path, TINY, "tiny.toml")) == 0
    out = capsys.readouterr().out
    assert "tiny: Tiny: DiT-S/8 and DyDiT-S/8" in out and "auto: runs here" in out
    line = next(line for line in out.splitlines() if line.startswith("DiT-S/8 "))
    assert "params, flops (1 not here)" in line
    assert "missing here: " in out and "dit-xl-2" in out


def test_bad_suite_and_bad_baseline_fail_before_running(tmp_path, capsys):
    bad = write(tmp_path, TINY.replace('metric = "fid"', 'metric = "fdi"'), "bad.toml")
    assert cli("run", bad, "--out", tmp_path / "r") == 2
    assert "column 'fid': field 'metric': unknown value 'fdi'" in capsys.readouterr().err
    assert cli("run", write(tmp_path, TINY, "tiny.toml"), "--out", tmp_path / "r",
               "--baseline", tmp_path / "none.json") == 2
    assert not (tmp_path / "r").exists()


def test_python_dash_m_bench_validates_the_shipped_suites():
    """The real entry point: every shipped suite file is valid."""
    proc = subprocess.run([sys.executable, "-m", "bench", "validate"], capture_output=True, text=True, timeout=120,
                          cwd=SUITES_DIR.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: suites/table1.toml: suite table1, 14 rows, 7 columns" in proc.stdout


def test_an_interrupted_run_writes_no_result_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import bench.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench.runner, "run_suite", interrupted)
    suite, out = write(tmp_path, TINY, "tiny.toml"), tmp_path / "reports"
    assert cli("run", suite, "--out", out, "--retrain") == 130
    err = capsys.readouterr().err
    assert "interrupted: no result was written" in err and f"python -m bench run {suite}" in err
    # the rerun rebuilds only what was built before this run started (what this run retrained is kept)
    assert re.search(r"Resume: DYDIT_RETRAIN_SINCE=\d+ python -m bench run .* --retrain", err)
    assert not (out / "tiny.json").exists()
