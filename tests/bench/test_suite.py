"""Suite files: the real Table 1 suite, tolerance semantics, and one-line errors for malformed files."""
import pytest

from bench.results import Tolerance
from bench.suite import SUITES_DIR, SuiteError, load_suite, suite_files
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
    assert fid.assets == ("dit-xl-2", "vae-ft-ema") and fid.sampler == {}
    assert suite.rows[1].cells["fid"].reference


# (edit of MINI: old -> new, expected place in the message, expected field, expected words)
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
    "wrong unit": ('unit = "M"', 'unit = "B"', "column 'params'", "unit", "measured in 'M', not 'B'"),
    "wrong measurement": ('measure = "params"', 'measure = "flops"', "column 'params'", "measure",
                          "produced by measurement 'params'"),
    "reproduced row without model": ('model = "DiT-XL/2"\n', "", "row 'DiT-XL'", "model", "missing"),
    "bad suite name": ('name = "mini"', 'name = "mini suite"', "[suite]", "name", "lowercase"),
    "wrong type flag": ("reference = true", 'reference = "yes"', "row 'ADM'", "reference", "true or false"),
    "checkpoint but none named": ('checkpoint = "dit-xl-2"\n', "", "row 'DiT-XL', cell 'fid'", "assets",
                                  "names none"),
    "missing title": ('title = "Mini"\n', "", "[suite]", "title", "missing"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_suite_gets_one_line_naming_file_place_and_field(tmp_path, case):
    old, new, where, field, words = MALFORMED[case]
    assert old in MINI, case
    path = write(tmp_path, MINI.replace(old, new, 1), "bad.toml")
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
    bad = write(tmp_path, MINI.replace('unit = "M"', "unit = 3"), "bad.toml")
    assert cli("validate", good) == 0
    assert cli("validate", good, bad) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok: {good}: suite mini, 2 rows, 2 columns, 4 cells")
    assert out[-1] == f"error: {bad}: column 'params': field 'unit': expected a string, got int 3"


def test_suite_names_resolve_to_files():
    assert suite_files(["table1"])[0].resolve() == TABLE1
    assert TABLE1 in [p.resolve() for p in suite_files()]
    assert all(p.name != "assets.toml" for p in suite_files())
