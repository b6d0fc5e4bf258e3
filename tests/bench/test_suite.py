"""Suite files: the real Table 1 suite, tolerance semantics, the resolved sampler, and one-line errors for
malformed files."""
import json

import pytest

from bench.definitions import SECTIONS, Tolerance
from bench.suite import SUITES_DIR, Options, SectionSpec, SuiteError, load_suite, suite_files
from dydit.sampling import SamplerSpec
from dydit.sampling import SAMPLERS
from tests.bench.runner_helpers import MINI, write

TABLE1 = SUITES_DIR / "table1.toml"
CITED = {"ADM", "LDM-4", "U-ViT-L/2", "U-ViT-H/2", "DiffuSSM-XL", "DiM-L", "DiM-H", "DiffT", "DiMR-XL"}


def test_table1_has_every_row_and_column_of_the_paper():
    suite = load_suite(TABLE1)
    assert [c.key for c in suite.columns] == ["params", "flops", "fid", "sfid", "is", "precision", "recall"]
    assert len(suite.rows) == 14
    assert {r.name for r in suite.rows if r.reference} == CITED
    reproduced = {r.name: r.model for r in suite.rows if not r.reference}
    assert reproduced == {"DiT-L": "DiT-L/2", "DiT-XL": "DiT-XL/2", "SiT-XL": "SiT-XL/2",
                          "DyDiT-XL λ=0.7": "DyDiT-XL/2", "DyDiT-XL λ=0.5": "DyDiT-XL/2"}
    rows = {r.name: r for r in suite.rows}
    assert rows["DiT-XL"].cells["flops"].paper == 118 and rows["DiT-XL"].cells["is"].paper == 277.0
    assert "sfid" not in rows["DiT-L"].cells  # the paper prints "-"


def test_table1_cells_say_why_their_tolerance_and_what_they_need():
    suite = load_suite(TABLE1)
    for row, cell in suite.cells():
        if cell.reference:
            assert cell.tolerance is None
            continue
        assert cell.tolerance is not None and cell.tolerance.why, (row.name, cell.column)
        if "smoke" in cell.profiles:  # smoke cells run anywhere
            assert not cell.assets and cell.device is None, (row.name, cell.column)
        if cell.measure == "quality":
            assert cell.profiles == ("full",) and cell.device == "cuda" and row.checkpoint in cell.assets
    rows = {r.name: r for r in suite.rows}
    assert "458,102,816" in rows["DiT-L"].cells["params"].erratum
    dynamic = rows["DyDiT-XL λ=0.7"].cells["flops"]
    assert (dynamic.metric, dynamic.paper, dynamic.assets) == ("gflops_dynamic", 84.33, ("dydit-xl-2-lambda0.7",))
    assert rows["DiT-L"].cells["fid"].reference  # no public DiT-L checkpoint: cited


def test_printed_integers_get_a_window_not_a_relative_band():
    """Table 1 prints 118 for 118.69 (truncated) and 81 for 80.75 (rounded); 468 for 458.10 is an erratum."""
    flops = load_suite(TABLE1).columns[1].tolerance
    assert flops.accepts(118, 118.6886656) and flops.accepts(81, 80.749)
    assert not flops.accepts(118, 119.0) and not flops.accepts(118, 117.4)
    assert not Tolerance("rel", 0.005, "").accepts(118, 118.69)  # why a relative band would be wrong
    assert not load_suite(TABLE1).columns[0].tolerance.accepts(468, 458.102816)


def test_tolerance_kinds():
    assert Tolerance("rel", 0.02, "").band(100) == (98, 102)
    assert Tolerance("abs", 0.1, "").accepts(2.27, 2.37) and not Tolerance("abs", 0.1, "").accepts(2.27, 2.38)
    window = Tolerance("window", (-0.5, 1.0), "")
    assert window.allowed_move(10) == 0.75
    assert Tolerance.from_dict(window.to_dict()) == window and Tolerance.from_dict(None) is None


def test_mini_suite_is_valid(tmp_path):
    suite = load_suite(write(tmp_path, MINI))
    fid = suite.rows[0].cells["fid"]
    assert fid.assets == ("dit-xl-2", "vae-ft-ema") and fid.sampler == SamplerSpec()
    assert suite.rows[1].cells["fid"].reference and not fid.unavailable


def test_sampler_defaults_are_in_one_place():
    assert SamplerSpec() == SamplerSpec(name="ddpm", steps=250, cfg_scale=1.5, guided_channels=3,
                                            labels="uniform", num_samples=50000, seed=0, batch_size=32,
                                            precision="tf32", deepcache_interval=0)
    assert SamplerSpec(name="ddim").steps == 50 and SamplerSpec(name="dpm-solver++").steps == 20


# MINI with every optional table: [suite.sampler], a column's, a row's and a cell's sampler, row options,
# a plot and a section. The malformed cases below are edits of this text.
RICH = MINI.replace('title = "Mini"\n', '''title = "Mini"

[suite.sampler]
name = "ddpm"
steps = 250
cfg_scale = 1.5
num_samples = 50000
''', 1).replace('tolerance = { abs = 0.1, why = "seed noise" }\n', '''tolerance = { abs = 0.1, why = "seed noise" }
sampler = { batch_size = 16 }
''', 1).replace('cells = { params = 675, fid = 2.27 }', '''sampler = { labels = "balanced", seed = 1, guided_channels = 3 }
options = { flops_target = 0.5 }
cells = { params = 675, fid = { paper = 2.27, fid_reference = "adm-ref-imagenet256", sampler = { precision = "fp32" } } }''', 1) + '''
[[plots]]
x = "params"
y = "fid"
log_x = true

[[sections]]
title = "Pipeline check"
module = "pipeline_check"
profiles = ["smoke"]
'''


def test_a_cells_sampler_is_suite_then_row_then_column_then_cell_with_the_defaults_for_the_rest(tmp_path):
    suite = load_suite(write(tmp_path, RICH))
    row = suite.rows[0]
    fid, params = row.cells["fid"].sampler, row.cells["params"].sampler
    assert fid == SamplerSpec(name="ddpm", steps=250, cfg_scale=1.5, num_samples=50000, labels="balanced", seed=1,
                                guided_channels=3, batch_size=16, precision="fp32")
    assert (params.batch_size, params.precision, params.labels) == (32, "tf32", "balanced")  # not the fid column's
    assert row.cells["fid"].fid_reference == "adm-ref-imagenet256"
    assert row.options == Options(flops_target=0.5) and suite.plots[0]["log_x"] is True
    all_channels = load_suite(write(tmp_path, RICH.replace("guided_channels = 3", 'guided_channels = "all"')))
    assert all_channels.rows[0].cells["fid"].sampler.guided_channels is None  # SampleSpec's "all four"


def test_sections_name_a_registered_module_and_get_its_import_path(tmp_path):
    suite = load_suite(write(tmp_path, RICH))
    assert suite.sections == [SectionSpec("Pipeline check", "bench.sections.pipeline_check", ("smoke",))]
    assert load_suite(TABLE1).sections[0].module == "bench.sections.pipeline_check"


@pytest.mark.parametrize("old, new, field, words", [
    ('metric = "params"\n', 'metric = "params"\nunit = "M"\n', "unit", "follows from its metric"),
    ('metric = "params"\n', 'metric = "params"\nmeasure = "params"\n', "measure", "follows from its metric"),
    ('module = "pipeline_check"', 'measure = "pipeline-check"', "measure", "renamed to 'module'"),
    ('precision = "fp32" }', 'precision = "fp32", reference = "adm-ref-imagenet256" }', "reference", "fid_reference"),
])
def test_an_old_suite_file_gets_one_line_naming_the_renamed_key(tmp_path, old, new, field, words):
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, RICH.replace(old, new, 1)))
    assert info.value.field == field and words in str(info.value) and "\n" not in str(info.value)


def test_unavailable_cells_keep_their_status_and_say_why(tmp_path):
    """A row's `unavailable` skips that measurement's cells with its reason; SiT's row now samples with
    SiT's SDE sampler (dydit.flow) and has none."""
    rows = {r.name: r for r in load_suite(TABLE1).rows}
    sit = rows["SiT-XL"]
    for key in ("fid", "sfid", "is", "precision", "recall"):
        cell = sit.cells[key]
        assert not cell.reference and cell.tolerance is not None and "sit-xl-2" in cell.assets
        assert not cell.unavailable and (cell.sampler.name, cell.sampler.steps) == ("flow-sde", 250)
    assert all(not c.unavailable for r in rows.values() for c in r.cells.values())
    text = RICH.replace('options = {', 'unavailable = { quality = "no sampler yet" }\noptions = {', 1)
    row = load_suite(write(tmp_path, text)).rows[0]
    assert (row.cells["fid"].unavailable, row.cells["params"].unavailable) == ("no sampler yet", "")
    cell_only = RICH.replace("cells = { params = 675,", 'cells = { params = { paper = 675, unavailable = "why" },')
    assert load_suite(write(tmp_path, cell_only)).rows[0].cells["params"].unavailable == "why"


# (edit of RICH: old -> new, expected place in the message, expected field, expected words)
MALFORMED = {
    "bad toml": ("cells = { params = 608", "cells = { params = 608,,", None, None, "not valid TOML"),
    "unknown metric": ('metric = "fid"', 'metric = "fidd"', "column 'fid'", "metric", "unknown value 'fidd'"),
    "missing tolerance": ('tolerance = { abs = 0.1, why = "seed noise" }\n', "", "row 'DiT-XL', cell 'fid'",
                          "tolerance", "missing"),
    "unknown model": ('"DiT-XL/2"', '"DiT-XXL/2"', "row 'DiT-XL'", "model", "unknown model 'DiT-XXL/2'"),
    "wrong type": ("cells = { params = 675,", 'cells = { params = "675",', "row 'DiT-XL', cell 'params'", "paper",
                   "expected a number, got str '675'"),
    "two tolerance kinds": ("{ abs = 0.1,", "{ abs = 0.1, rel = 0.1,", "column 'fid'", "tolerance", "exactly one"),
    "tolerance without why": ('{ abs = 0.1, why = "seed noise" }', "{ abs = 0.1 }", "column 'fid': tolerance",
                              "why", "missing"),
    "empty window": ("[-0.5, 1.0]", "[1.0, -0.5]", "column 'params'", "tolerance.window", "lo must be below hi"),
    "negative tolerance": ("abs = 0.1", "abs = -0.1", "column 'fid'", "tolerance.abs", "must not be negative"),
    "unknown profile": ('profiles = ["full"]', 'profiles = ["fast"]', "column 'fid'", "profiles",
                        "unknown value 'fast'"),
    "unknown asset": ('"vae-ft-ema"]', '"vae-ft-emma"]', "column 'fid'", "assets", "unknown asset 'vae-ft-emma'"),
    "duplicate row": ('name = "ADM"', 'name = "DiT-XL"', "row 'DiT-XL'", "name", "duplicate"),
    "cell of no column": ("fid = 4.59 }", "fid = 4.59, sfid = 4.6 }", "row 'ADM', cell 'sfid'", None,
                          "no such column"),
    "misspelt field": ('checkpoint = "dit-xl-2"', 'checkpiont = "dit-xl-2"', "row 'DiT-XL'", "checkpiont",
                       "unknown field"),
    "reproduced row without model": ('model = "DiT-XL/2"\n', "", "row 'DiT-XL'", "model", "missing"),
    "bad suite name": ('name = "mini"', 'name = "mini suite"', "[suite]", "name", "lowercase"),
    "wrong type flag": ("reference = true", 'reference = "yes"', "row 'ADM'", "reference", "true or false"),
    "checkpoint but none named": ('checkpoint = "dit-xl-2"\n', "", "row 'DiT-XL', cell 'fid'", "assets",
                                  "names none"),
    "missing title": ('title = "Mini"\n', "", "[suite]", "title", "missing"),
    # sampler tables: only known fields, each typed and ranged, wherever they are written
    "unknown sampler": ('name = "ddpm"', 'name = "no-such-sampler"', "[suite.sampler]", "name",
                        f"unknown sampler 'no-such-sampler' (known: {', '.join(SAMPLERS)})"),
    "misspelt sampler field": ("steps = 250", "stpes = 250", "[suite.sampler]", "stpes", "unknown field"),
    "zero steps": ("steps = 250", "steps = 0", "[suite.sampler]", "steps", "must be >= 1, got 0"),
    "fractional steps": ("steps = 250", "steps = 2.5", "[suite.sampler]", "steps", "expected an integer, got float"),
    "boolean sample count": ("num_samples = 50000", "num_samples = true", "[suite.sampler]", "num_samples",
                             "expected an integer, got bool True"),
    "guidance below 1": ("cfg_scale = 1.5", "cfg_scale = 0.5", "[suite.sampler]", "cfg_scale", "must be >= 1"),
    "guided channels": ("guided_channels = 3", 'guided_channels = "some"', "row 'DiT-XL': sampler",
                        "guided_channels", "expected 1 to 4 (DiT guides 3) or 'all'"),
    "unknown labels": ('labels = "balanced"', 'labels = "random"', "row 'DiT-XL': sampler", "labels",
                       "unknown label mode 'random'"),
    "negative seed": ("seed = 1", "seed = -1", "row 'DiT-XL': sampler", "seed", "must be >= 0"),
    "zero batch": ("batch_size = 16", "batch_size = 0", "column 'fid': sampler", "batch_size", "must be >= 1"),
    "sampler not a table": ("sampler = { batch_size = 16 }", 'sampler = "ddim"', "column 'fid'", "sampler",
                            "expected a table"),
    "unknown precision": ('precision = "fp32"', 'precision = "fp16"', "row 'DiT-XL', cell 'fid': sampler",
                          "precision", "unknown precision 'fp16' (known: fp32, tf32, bf16)"),
    "unknown reference": ('fid_reference = "adm-ref-imagenet256"', 'fid_reference = "adm-ref-imagenet512"',
                          "row 'DiT-XL', cell 'fid'", "fid_reference", "unknown asset 'adm-ref-imagenet512'"),
    # sections: only the project's own modules
    "section module path": ('module = "pipeline_check"', 'module = "os.path"', "section 1", "module",
                            f"unknown section module 'os.path' (known: {', '.join(SECTIONS)})"),
    "section of the right module by path": ('module = "pipeline_check"', 'module = "bench.sections.pipeline_check"',
                                            "section 1", "module", "unknown section"),
    # options, plots, lists, unavailable, cited cells
    "unknown option": ("flops_target = 0.5", "flop_target = 0.5", "row 'DiT-XL': options", "flop_target",
                       "unknown field"),
    "control of a full-size model": ("flops_target = 0.5", "finetuned = true", "row 'DiT-XL': options", "finetuned",
                                     "only a static mini model has a fine-tuned control"),
    "option out of range": ("flops_target = 0.5", "flops_target = 1.5", "row 'DiT-XL': options", "flops_target",
                            "must be <= 1"),
    "plot of no column": ('\ny = "fid"', '\ny = "fdi"', "plot 1", "y", "unknown column 'fdi'"),
    "plot against itself": ('x = "params"', 'x = "fid"', "plot 1", "y", "the same column as x"),
    "plot flag type": ("log_x = true", 'log_x = "yes"', "plot 1", "log_x", "true or false"),
    "number in a list": ('profiles = ["full"]', 'profiles = ["full", 1]', "column 'fid'", "profiles",
                         "expected a list of strings, got int 1"),
    "listed twice": ('profiles = ["full"]', 'profiles = ["full", "full"]', "column 'fid'", "profiles",
                     "'full' is listed twice"),
    "infinite window": ("[-0.5, 1.0]", "[-inf, 1.0]", "column 'params'", "tolerance.window", "two finite numbers"),
    "blank note": ('checkpoint = "dit-xl-2"\n', 'checkpoint = "dit-xl-2"\nnote = " "\n', "row 'DiT-XL'", "note",
                   "must not be empty"),
    "unavailable of no measurement": ('options = {', 'unavailable = { qualty = "x" }\noptions = {',
                                      "row 'DiT-XL': unavailable", "qualty", "unknown measurement"),
    "unavailable without a reason": ('options = {', 'unavailable = { quality = 3 }\noptions = {',
                                     "row 'DiT-XL': unavailable", "quality", "expected a string, got int 3"),
    "unavailable of no cell": ('options = {', 'unavailable = { latency = "x" }\noptions = {',
                               "row 'DiT-XL': unavailable", "latency", "no reproduced cell measured by 'latency'"),
    "unavailable cited row": ("reference = true\n", 'reference = true\nunavailable = { quality = "x" }\n',
                              "row 'ADM'", "unavailable", "a cited row is never measured"),
    "tolerance on a cited cell": ("fid = 4.59 }", 'fid = { paper = 4.59, tolerance = { abs = 1, why = "x" } } }',
                                  "row 'ADM', cell 'fid'", "tolerance", "a cited cell is never measured"),
    "uncited cell in a cited row": ("cells = { params = 608,", "cells = { params = { paper = 608, reference = false },",
                                    "row 'ADM', cell 'params'", "reference", "every cell of the cited row"),
    "row without cells": ("cells = { params = 608, fid = 4.59 }", "cells = {}", "row 'ADM'", "cells", "empty"),
}


def test_enough_malformed_cases_and_rich_is_valid(tmp_path):
    assert len(MALFORMED) >= 20
    assert load_suite(write(tmp_path, RICH)).name == "mini"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_suite_gets_one_line_naming_file_place_and_field(tmp_path, case):
    old, new, where, field, words = MALFORMED[case]
    assert old in RICH, case
    path = write(tmp_path, RICH.replace(old, new, 1), "bad.toml")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert words in message
    if where:
        assert f": {where}: " in message
    if field:
        assert f"field '{field}'" in message
    assert (info.value.where, info.value.field) == (where, field) or where is None


def test_validate_command_reports_each_file(tmp_path, capsys):
    from tests.bench.runner_helpers import cli
    good = write(tmp_path, MINI, "good.toml")
    bad = write(tmp_path, MINI.replace('label = "Params (M)"', "label = 3"), "bad.toml")
    assert cli("validate", good) == 0
    assert cli("validate", good, bad) == 2  # a malformed suite is an input error: exit 2, its line on stderr
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith(f"ok: {good}: suite mini, 2 rows, 2 columns, 4 cells")
    assert captured.err.splitlines() == [f"error: {bad}: column 'params': field 'label': expected a string, got int 3"]


def test_validate_command_rejects_an_unknown_sampler_and_a_foreign_section_module(tmp_path, capsys):
    from tests.bench.runner_helpers import cli
    sampler = write(tmp_path, RICH.replace('name = "ddpm"', 'name = "no-such-sampler"'), "sampler.toml")
    section = write(tmp_path, RICH.replace('module = "pipeline_check"', 'module = "os.path"'), "section.toml")
    assert cli("validate", sampler) == 2 and cli("validate", section) == 2
    out = capsys.readouterr().err.splitlines()
    assert out == [f"error: {sampler}: [suite.sampler]: field 'name': unknown sampler 'no-such-sampler' "
                   f"(known: {', '.join(SAMPLERS)})",
                   f"error: {section}: section 1: field 'module': unknown section module 'os.path' (known: {', '.join(SECTIONS)})"]


def test_suite_names_resolve_to_files():
    assert suite_files(["table1"])[0].resolve() == TABLE1
    assert TABLE1 in [p.resolve() for p in suite_files()]
    assert all(p.name != "assets.toml" for p in suite_files())


def test_one_sided_tolerances_accept_any_better_value():
    worse_by = Tolerance("atmost", 8.0, "spread")  # a lower-is-better difference may rise by 8
    assert worse_by.accepts(0.0, 8.0) and worse_by.accepts(0.0, -500.0) and not worse_by.accepts(0.0, 8.01)
    assert worse_by.text() == "at most +8 above the paper's value" and worse_by.allowed_move(3.0) == 8.0
    drops_by = Tolerance("atleast", 0.02, "spread")
    assert drops_by.accepts(0.0, -0.02) and drops_by.accepts(0.0, 0.5) and not drops_by.accepts(0.0, -0.021)
    assert Tolerance.from_dict(drops_by.to_dict()) == drops_by


SPREAD_SUITE = MINI.replace('metric = "fid"\nprofiles = ["full"]\ndevice = "cuda"\nassets = ["checkpoint", "vae-ft-ema"]\n'
                            'tolerance = { abs = 0.1, why = "seed noise" }',
                            'metric = "mini_fid_vs_control"\nprofiles = ["full"]\n'
                            'tolerance = { spread = "mini_fid", why = "keeps the control\'s quality" }')


def test_a_spread_tolerance_cites_the_spread_study_one_sided_by_the_metrics_direction(tmp_path, monkeypatch):
    import bench.suite
    study = tmp_path / "mini-spread.json"
    monkeypatch.setattr(bench.suite, "SPREAD_FILE", study)
    suite_file = write(tmp_path, SPREAD_SUITE)
    with pytest.raises(SuiteError, match="tolerance.spread.*cannot be read.*nox -s mini-spread"):
        load_suite(suite_file)  # no study: refused, never a default
    study.write_text(json.dumps({"families": {"DiT": {"tolerances": {"mini_fid": 8.4, "accuracy": 0.03}}},
                                 "rules": {"tolerance": "2 x std"}, "provenance": {"date": "d", "commit": "c" * 40}}))
    tol = load_suite(suite_file).rows[0].cells["fid"].tolerance
    assert (tol.kind, tol.value) == ("atmost", 8.4) and "mini_fid 8.4 from" in tol.why and "2 x std" in tol.why
    accuracy = SPREAD_SUITE.replace('metric = "mini_fid_vs_control"', 'metric = "accuracy_vs_control"').replace(
        'spread = "mini_fid"', 'spread = "accuracy"')
    tol = load_suite(write(tmp_path, accuracy, "acc.toml")).rows[0].cells["fid"].tolerance
    assert (tol.kind, tol.value) == ("atleast", 0.03)
    with pytest.raises(SuiteError, match="unknown 'fid'; the spread study derived mini_fid, accuracy"):
        load_suite(write(tmp_path, SPREAD_SUITE.replace('spread = "mini_fid"', 'spread = "fid"'), "bad.toml"))
    # another family's own spread, cited by name; a study without it is refused with the command that measures it
    flux = SPREAD_SUITE.replace('spread = "mini_fid"', 'spread = "mini_fid", family = "FLUX"')
    with pytest.raises(SuiteError, match="has no spread of FLUX.*mini-spread --families FLUX"):
        load_suite(write(tmp_path, flux, "flux.toml"))
    with pytest.raises(SuiteError, match="unknown 'Latte'; the spread study measures the spread of DiT, FLUX"):
        load_suite(write(tmp_path, flux.replace('"FLUX"', '"Latte"'), "latte.toml"))
    with pytest.raises(SuiteError, match="tolerance.family.*give spread too"):
        load_suite(write(tmp_path, SPREAD_SUITE.replace('spread = "mini_fid"', 'abs = 1.0, family = "FLUX"'), "f.toml"))
    studied = json.loads(study.read_text())
    studied["families"]["FLUX"] = {"tolerances": {"mini_fid": 9.5}, "provenance": {"date": "e", "commit": "f" * 40}}
    study.write_text(json.dumps(studied))
    tol = load_suite(write(tmp_path, flux, "flux.toml")).rows[0].cells["fid"].tolerance
    assert (tol.kind, tol.value) == ("atmost", 9.5) and "(FLUX;" in tol.why and "ffffffffff" in tol.why
    # a cell measuring a metric better the other way cannot inherit the column's one-sided tolerance
    other_way = SPREAD_SUITE.replace("cells = { params = 675, fid = 2.27 }",
                                     'cells = { params = 675, fid = { paper = 0.0, metric = "accuracy_vs_control" } }')
    with pytest.raises(SuiteError, match="one-sided tolerance is for 'mini_fid_vs_control'.*its own tolerance"):
        load_suite(write(tmp_path, other_way, "other.toml"))


def test_the_dyflux_suite_counts_its_params_and_tflops_from_the_configs(tmp_path):
    """suites/dyflux.toml on this CPU: params on the meta device, TFLOPs from the config; FLUX-Lite's 30.0 T
    reproduces, FLUX-dev's 40.8 T and DyFLUX-Lite's "8 B" do not (NOTES.md), DyFLUX's TFLOPs need its checkpoint."""
    from bench.measure.base import Context
    from bench.runner import run_suite
    from bench.timing import flux as flux_timing
    from tests.bench.runner_helpers import machine
    small = flux_timing.FluxTimingSetup(single=3, resolution=128, text_tokens=4, times=(0.5,), repeats=2, overrides=(
        ("num_attention_heads", 2), ("attention_head_dim", 16), ("axes_dims_rope", (4, 6, 6))))
    with pytest.MonkeyPatch.context() as m:  # the ratio at the suite's SCALED setup takes minutes: a small FLUX here
        m.setattr(flux_timing, "SCALED", small)
        result = run_suite(load_suite("suites/dyflux.toml"), "smoke", machine(tmp_path), Context())
    cells = {(c["row"], c["column"]): c for c in result["cells"]}
    ratio = cells["DyFLUX-Lite 8 B", "ratio"]
    assert ratio["status"] in ("pass", "fail", "inconclusive") and ratio["measured"] > 0, ratio
    (timed,) = result["provenance"]["measurements"]["flux_speed"]
    assert abs(timed["flops_ratio"] - 0.7067) < 0.05 and timed["flops_target"] == 0.7067
    assert cells["FLUX-Lite 8 B", "tflops"]["status"] == "pass"
    assert cells["FLUX 12 B", "params"]["status"] == "pass" and cells["FLUX-Lite 8 B", "params"]["status"] == "pass"
    assert cells["FLUX 12 B", "tflops"]["status"] == "fail" and round(cells["FLUX 12 B", "tflops"]["measured"], 1) == 37.2
    assert cells["DyFLUX-Lite 8 B", "params"]["status"] == "fail"  # the release's routers add 1.74 B
    assert cells["DyFLUX-Lite 8 B", "tflops"]["status"] == "skipped"


def test_the_latte_suite_counts_latte_xl_from_its_architecture_and_names_what_fvd_needs(tmp_path):
    """suites/latte.toml on this CPU: params (meta device) and GFLOPs per clip measured, FVD skipped with its needs."""
    from bench.measure.base import Context
    from bench.runner import run_suite
    from tests.bench.runner_helpers import machine
    from bench.timing import latte as latte_timing
    small = latte_timing.LatteTimingSetup(frames=4, latent=16, timesteps=(900.0, 500.0, 100.0), repeats=2,
                                          overrides=(("hidden_size", 64), ("num_heads", 4)))
    with pytest.MonkeyPatch.context() as m:  # SCALED (Latte-XL's width, 16 frames) takes minutes: small here
        m.setattr(latte_timing, "SCALED", small)
        result = run_suite(load_suite("suites/latte.toml"), "smoke", machine(tmp_path), Context())
    timed = {c["row"]: c for c in result["cells"] if c["column"] == "ratio"}
    assert set(timed) == {"DyLatte-XL/2 λ=0.7", "DyLatte-XL/2 λ=0.5"}
    assert all(c["status"] == "measured" and c["measured"] > 0 for c in timed.values()), timed
    speeds = result["provenance"]["measurements"]["latte_speed"]
    for s in speeds:  # a tiny model's FLOPs move in steps (4 heads, 16 tokens a frame): near the target
        assert abs(s["flops_ratio"] - s["flops_target"]) < 0.1, s
    cells = {c["column"]: c for c in result["cells"] if c["row"] == "Latte-XL/2 (UCF-101)"}
    assert round(cells["params"]["measured"], 2) == 674.11  # 673.80 M trained + the frozen sin-cos tables
    assert round(cells["flops"]["measured"], 2) == 1894.04 and cells["flops"]["status"] == "measured"
    assert cells["fvd"]["status"] == "skipped"  # the full profile's, on CUDA, with the assets it names
    from bench.runner import blocked
    fvd = load_suite("suites/latte.toml").rows[0].cells["fvd"]
    reason = blocked(fvd, "full", machine(tmp_path))
    for need in ("latte-xl-2-ucf101", "vae-ft-ema", "i3d-fvd", "ucf101-fvd-reference", "CUDA"):
        assert need in reason, reason
