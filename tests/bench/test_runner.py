"""The runner: isolation of cells, skips that name what is missing, profiles, sections, result files."""
import json

import pytest

from bench.measure.base import Context, Skip
from bench.results import ERROR, FAIL, INCONCLUSIVE, MEASURED, PASS, REFERENCE, SKIPPED, load_result, write_json_atomic
from bench.runner import blocked, run_suite
from bench.suite import load_suite
from tests.bench.runner_helpers import FAKE_SUITE, MINI, install_fake, install_section, machine, write


def by_row(result, column="a"):
    return {c["row"]: c for c in result["cells"] if c["column"] == column}


def test_a_cell_that_raises_does_not_stop_the_others(tmp_path, monkeypatch):
    calls = []

    def measure(item, ctx):
        calls.append((item.row.name, item.metric))
        if item.row.name == "two" and item.metric == "fake":
            raise RuntimeError("boom in two")
        return {"one": 1.005, "two": 2.0, "three": 3.5}[item.row.name] if item.metric == "fake" else 2.1

    install_fake(monkeypatch, measure)
    suite = load_suite(write(tmp_path, FAKE_SUITE))
    result = run_suite(suite, "smoke", machine(tmp_path), Context())
    cells = by_row(result)
    assert [cells[r]["status"] for r in ("one", "two", "three", "cited")] == [PASS, ERROR, FAIL, REFERENCE]
    assert cells["two"]["reason"].startswith("RuntimeError: boom in two")
    assert cells["two"]["measured"] is None and cells["one"]["measured"] == 1.005
    assert "outside [2.97, 3.03]" in cells["three"]["reason"]
    assert ("three", "fake") in calls and ("three", "fake_s") in calls  # the run went on after the error
    assert result["counts"] == {PASS: 4, FAIL: 1, INCONCLUSIVE: 0, MEASURED: 0, SKIPPED: 0, ERROR: 1, REFERENCE: 1}


def test_a_measured_cells_note_explains_it_where_it_misses_only(tmp_path, monkeypatch):
    install_fake(monkeypatch, lambda item, ctx: {"one": 1.0, "three": 3.5}.get(item.row.name, 2.0))
    why = "where it misses, the measured cause"
    noted = FAKE_SUITE.replace("cells = { a = 1.0, t = 2.0 }", f'cells = {{ a = {{ paper = 1.0, note = "{why}" }}, t = 2.0 }}')
    noted = noted.replace("cells = { a = 3.0, t = 2.0 }", f'cells = {{ a = {{ paper = 3.0, note = "{why}" }}, t = 2.0 }}')
    cells = by_row(run_suite(load_suite(write(tmp_path, noted)), "smoke", machine(tmp_path), Context()))
    assert cells["three"]["status"] == FAIL and cells["three"]["reason"].endswith(f"(paper 3, ±1 %). {why}")
    assert cells["one"]["status"] == PASS and why not in cells["one"]["reason"]


@pytest.mark.parametrize("returned, words", [(float("nan"), "expected a finite number"), ("2", "'2'"),
                                             (True, "True")])
def test_a_measurement_that_returns_no_number_is_an_error(tmp_path, monkeypatch, returned, words):
    install_fake(monkeypatch, lambda item, ctx: returned)
    result = run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context())
    cell = by_row(result)["one"]
    assert cell["status"] == ERROR and words in cell["reason"]


def test_skip_from_a_measurement_keeps_its_reason(tmp_path, monkeypatch):
    def measure(item, ctx):
        raise Skip("needs widget.pt under the assets root")

    install_fake(monkeypatch, measure)
    result = run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context())
    cell = by_row(result)["one"]
    assert (cell["status"], cell["reason"]) == (SKIPPED, "needs widget.pt under the assets root")


def test_cells_outside_the_profile_or_lacking_device_or_assets_are_skipped_with_what_is_missing(tmp_path):
    suite = load_suite(write(tmp_path, MINI))
    fid = suite.rows[0].cells["fid"]
    here = machine(tmp_path)
    smoke = blocked(fid, "smoke", here)
    assert smoke.startswith("not in the smoke profile (runs in: full)")
    assert "a CUDA GPU" in smoke and "dit-xl-2 (missing: " in smoke and "DiT-XL-2-256x256.pt" in smoke
    assert "vae-ft-ema" in smoke and "--assets DIR" in smoke
    full = blocked(fid, "full", here)
    assert full.startswith("missing here: a CUDA GPU") and "dit-xl-2" in full
    # with the device and every asset present, the cell runs
    gpu = machine(tmp_path, cuda=True)
    for rel in ("checkpoints/DiT-XL-2-256x256.pt", "vae/sd-vae-ft-ema/diffusion_pytorch_model.safetensors"):
        (gpu.assets_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (gpu.assets_root / rel).write_bytes(b"weights")
    assert blocked(fid, "full", gpu) is None
    assert blocked(suite.rows[0].cells["params"], "smoke", here) is None
    assert blocked(suite.rows[1].cells["fid"], "full", gpu) == "cited, not reproduced"


def test_a_measurement_module_not_in_the_checkout_skips_its_cells(tmp_path, monkeypatch):
    from bench import suite as suite_module
    install_fake(monkeypatch, lambda item, ctx: 1.0)
    monkeypatch.setitem(suite_module.MEASUREMENTS, "fake", "bench.measure.not_written_yet")
    result = run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context())
    assert by_row(result)["one"]["status"] == SKIPPED
    assert "bench.measure.not_written_yet is not in this checkout" in by_row(result)["one"]["reason"]


def test_a_measurement_that_cannot_start_or_group_makes_only_its_cells_errors(tmp_path, monkeypatch):
    module = install_fake(monkeypatch, lambda item, ctx: 1.0)

    def broken_group_key(self, item):
        if item.row.name == "two":
            raise RuntimeError("no key for two")
        return item.key
    monkeypatch.setattr(module.MEASUREMENT, "group_key", broken_group_key)
    cells = by_row(run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context()))
    assert cells["two"]["status"] == ERROR and "no key for two" in cells["two"]["reason"]
    assert cells["one"]["status"] in (PASS, FAIL) and cells["three"]["status"] in (PASS, FAIL)

    def broken_init(self, ctx):
        raise ImportError("a dependency of this measurement is missing")
    monkeypatch.setattr(module.MEASUREMENT, "__init__", broken_init)
    cells = by_row(run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context()))
    assert all(cells[r]["status"] == ERROR and "dependency" in cells[r]["reason"] for r in ("one", "two", "three"))
    assert cells["cited"]["status"] == REFERENCE


def test_sections_hook_runs_isolated_and_only_in_its_profiles(tmp_path, monkeypatch):
    checked = {"name": "steps", "value": 3, "unit": "", "ok": True, "expected": "3"}
    install_section(monkeypatch, "fake_checks.good",
                    lambda ctx: {"title": "Pipeline check", "note": "tiny run", "rows": [checked]})

    def explode(ctx):
        raise ValueError("no pipeline")
    install_section(monkeypatch, "fake_checks.bad", explode)
    install_fake(monkeypatch, lambda item, ctx: 1.0)
    text = FAKE_SUITE + '''
[[sections]]
title = "Good"
module = "fake_checks.good"
profiles = ["smoke"]

[[sections]]
title = "Bad"
module = "fake_checks.bad"
profiles = ["smoke", "full"]

[[sections]]
title = "GPU only"
module = "fake_checks.good"
profiles = ["full"]
'''
    result = run_suite(load_suite(write(tmp_path, text)), "smoke", machine(tmp_path), Context())
    good_s, bad_s, gpu_s = result["sections"]
    assert good_s == {"title": "Pipeline check", "note": "tiny run", "status": PASS, "rows": [checked], "figures": []}
    assert bad_s["status"] == ERROR and bad_s["note"] == "error: ValueError: no pipeline" and bad_s["rows"] == []
    assert gpu_s["status"] == SKIPPED and "not run in the smoke profile" in gpu_s["note"]
    assert by_row(result)["one"]["status"] == PASS  # cells unaffected


def test_result_has_provenance_and_round_trips(tmp_path, monkeypatch):
    install_fake(monkeypatch, lambda item, ctx: 1.0)
    suite = load_suite(write(tmp_path, FAKE_SUITE))
    result = run_suite(suite, "smoke", machine(tmp_path), Context(seed=7), ["run", "fake"])
    prov = result["provenance"]
    for key in ("git", "suite_sha256", "versions", "device", "tf32", "seeds", "started", "finished", "command"):
        assert key in prov, key
    assert set(prov["git"]) == {"commit", "dirty"} and prov["seeds"] == {"global_seed": 7}
    assert prov["suite_sha256"] == suite.sha256 and len(suite.sha256) == 64
    assert {"python", "torch", "cuda"} <= set(prov["versions"]) and prov["device"].startswith("cpu: ")
    assert prov["command"].endswith("-m bench run fake")
    cell = result["cells"][0]
    assert set(cell) >= {"row", "metric", "paper", "measured", "unit", "tolerance", "status", "reason"}
    assert cell["tolerance"] == {"rel": 0.01, "why": "1 % band for the test"} and cell["unit"] == "u"
    path = write_json_atomic(result, tmp_path / "out" / "fake.json")
    assert load_result(path) == json.loads(json.dumps(result))


def test_atomic_write_leaves_the_old_file_whole_after_a_crash(tmp_path, monkeypatch):
    path = write_json_atomic({"schema": "x", "n": 1}, tmp_path / "r.json")

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(OSError):
        write_json_atomic({"schema": "x", "n": 2}, path)
    assert json.loads(path.read_text()) == {"schema": "x", "n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no half-written temporary left


def test_load_result_rejects_other_json(tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a bench result"):
        load_result(other)
