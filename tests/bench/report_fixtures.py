"""A Table 1 result made fast: the real suite file plus a hostile row name, params/FLOPs faked by model."""
from bench.measure.base import Context
from bench.results import write_json_atomic
from bench.runner import run_suite
from bench.suite import SUITES_DIR, load_suite
from tests.bench.runner_helpers import install_fake, install_section, machine, write

HOSTILE = "<script>alert(1)</script>"
PARAMS = {"DiT-L/2": 458.102816, "DiT-XL/2": 675.129632, "SiT-XL/2": 675.111184, "DyDiT-XL/2": 678.424644}
GFLOPS = {"DiT-L/2": 80.749, "DiT-XL/2": 118.6887, "SiT-XL/2": 118.6839}

EXTRA = f'''
[[rows]]
name = "{HOSTILE}"
reference = true
cells = {{ params = 1, fid = 9.9 }}

[[sections]]
title = "Pipeline check"
module = "fake_checks.pipeline"
profiles = ["smoke"]
'''


def table1_result(tmp_path, monkeypatch, out_name="reports"):
    """Runs suites/table1.toml (+ EXTRA) in smoke with fake params/FLOPs; writes the JSON; returns (result, out)."""
    install_fake(monkeypatch, lambda item, ctx: PARAMS[item.model], name="params", metrics=())
    install_fake(monkeypatch, lambda item, ctx: GFLOPS[item.model], name="flops", metrics=())
    fake_check = lambda ctx: {  # noqa: E731
        "title": "Pipeline check", "note": "a 2-image <b>run</b>",
        "rows": [{"name": "images", "value": 2, "unit": "", "ok": True, "expected": "2"}]}
    install_section(monkeypatch, "fake_checks.pipeline", fake_check)
    # the suite's own smoke section samples and scores end to end (~25 s): its report is what is tested here
    install_section(monkeypatch, "pipeline_check", fake_check)
    text = (SUITES_DIR / "table1.toml").read_text(encoding="utf-8") + EXTRA
    suite = load_suite(write(tmp_path, text, "table1.toml"))
    result = run_suite(suite, "smoke", machine(tmp_path), Context(), ["run", "table1"])
    out = tmp_path / out_name
    write_json_atomic(result, out / "table1.json")
    return result, out
