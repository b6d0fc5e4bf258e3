"""Wrong and hostile input to every `python -m bench` subcommand: exit status 2, one `error:` line, no traceback,
the files already in the output folder untouched, and no pickled code run (a weights file that would create a
marker file when unpickled is refused wherever a weights path is taken)."""
import json
import pickle

import numpy as np
import pytest
import torch

from bench.cli import main
from dydit.registry import create_model

CUDA = torch.cuda.is_available()


class _Evil:
    """Unpickled, it creates the marker file (what a crafted checkpoint would do with a shell command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def w(tmp_path):
    """The files the cases name: {out} (a folder with a file in it), {evil} (a malicious pickle), ..."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("kept")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Evil(marker)}, evil)
    evil_cleanfid = tmp_path / "cf" / "inception-2015-12-05.pt"
    evil_cleanfid.parent.mkdir()
    evil_cleanfid.write_bytes(pickle.dumps(_Evil(marker)))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not a zip archive at all")
    mini32 = tmp_path / "mini32.pt"
    torch.save(create_model("DiT-Mini-32/2").state_dict(), mini32)
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=images)
    np.savez(tmp_path / "one.npz", arr_0=images[:1])
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "bad.json").write_text("{ not json")
    (tmp_path / "bad.toml").write_text("[assets\n")
    corrupt_reports = tmp_path / "corrupt-reports"
    corrupt_reports.mkdir()
    (corrupt_reports / "table1.json").write_text('{"schema": "dydit-bench-result/1", "suite": "tab')
    result = {"schema": "dydit-bench-result/1", "suite": "s", "provenance": {}, "cells": [
        {"row": "r", "column": "c", "status": "pass", "measured": "abc"}]}
    (tmp_path / "nan.json").write_text(json.dumps(result))
    (tmp_path / "long.toml").write_text(f'[suite]\nname = "{"x" * 300}"\ntitle = "t"\n\n[[columns]]\nkey = "params"\n'
                                        'label = "P"\nmetric = "params"\nprofiles = ["smoke"]\n'
                                        'tolerance = { abs = 0.01, why = "exact" }\n\n[[rows]]\nname = "r"\n'
                                        'model = "DiT-S/8"\ncells = { params = 1.0 }\n')
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "DiT-Mini/2", "data": "digits", "max_steps": 2,
                                                 "global_batch_size": 4}))
    torch.save({"model": _Evil(marker)}, run / "checkpoints" / "0000001.pt")
    return {"tmp": tmp_path, "out": out, "evil": evil, "evil_cleanfid": evil_cleanfid, "corrupt": corrupt,
            "mini32": mini32, "marker": marker, "run": run}


S = ["sample", "--model", "DiT-S/8", "--random-weights", "--num-samples", "4", "--out", "{out}"]
SMINI = ["sample", "--model", "DiT-Mini/2", "--num-samples", "4", "--steps", "2", "--sampler", "ddim", "--out", "{out}",
         "--no-progress"]
E = ["evaluate", "{tmp}/samples.npz", "--ref", "{tmp}/samples.npz", "--cache-dir", "{out}"]
T = ["train", "--model", "DiT-Mini/2", "--data", "digits", "--global-batch-size", "4", "--max-steps", "2",
     "--no-progress", "--device", "cpu"]
SFLUX = ["sample", "--model", "FLUX-Mini", "--random-weights", "--num-samples", "1", "--sampler", "flow-euler",
         "--out", "{out}"]
CASES = {
    # sample: parse-time values, weights files, output folder
    "sample unknown model": ["sample", "--model", "DiT-XL/3", "--num-samples", "4", "--out", "{out}"],
    "sample text-to-image without prompts": SFLUX,
    "sample prompt with an unknown word": SFLUX + ["--prompt", "a purple seven"],
    "sample prompt too long": SFLUX + ["--prompt", " ".join(["seven"] * 11)],
    "sample prompt to a class model": SFLUX[:2] + ["SiT-Mini/2"] + SFLUX[3:] + ["--prompt", "a thin seven on the left"],
    "sample prompts file missing": SFLUX + ["--prompts", "{out}/no-such-file.txt"],
    "sample zero samples": S[:5] + ["0", "--out", "{out}"],
    "sample zero steps": S + ["--steps", "0"],
    "sample negative steps": S + ["--steps", "-3"],
    "sample nan cfg": S + ["--cfg-scale", "nan"],
    "sample negative cfg": S + ["--cfg-scale", "-5"],
    "sample zero batch": S + ["--batch-size", "0"],
    "sample negative seed": S + ["--seed", "-1"],
    "sample no such gpu": S + ["--device", "cuda:7"],
    "sample not a device": S + ["--device", "tpu"],
    "sample malicious checkpoint": SMINI + ["--ckpt", "{evil}"],
    "sample missing checkpoint": SMINI + ["--ckpt", "{tmp}/nothing.pt"],
    "sample corrupt checkpoint": SMINI + ["--ckpt", "{corrupt}"],
    "sample wrong-size checkpoint": SMINI + ["--ckpt", "{mini32}"],
    "sample out is a file": SMINI[:-2] + ["{tmp}/file.txt", "--random-weights"],
    "sample malicious vae": S[:-2] + ["--vae", "{evil}", "--steps", "2", "--sampler", "ddim", "--out", "{out}",
                                      "--no-progress"],
    "sample a vae for pixels": SMINI + ["--random-weights", "--vae", "random-tiny"],
    "sample no checkpoint": SMINI,
    "sample a diffusion sampler for a flow model": ["sample", "--model", "SiT-Mini/2", "--random-weights",
                                                    "--num-samples", "4", "--sampler", "ddim", "--out", "{out}"],
    "sample a vae folder without config": S[:-2] + ["--vae", "{tmp}/cf", "--steps", "2", "--sampler", "ddim", "--out",
                                                    "{out}", "--no-progress"],
    # speed
    "speed fraction above 1": ["speed", "--flops-fraction", "1.5"],
    "speed fraction 0": ["speed", "--flops-fraction", "0"],
    "speed negative fraction": ["speed", "--flops-fraction", "-1"],
    "speed a static model": ["speed", "--model", "DiT-XL/2"],
    "speed too few repeats": ["speed", "--model", "DyDiT-Mini/2", "--repeats", "3"],
    "speed bad cache budget": ["speed", "--cache-gb", "x"],
    "speed zero steps": ["speed", "--steps", "0"],
    # info
    "info unknown model": ["info", "NoSuch/2"],
    "info no model": ["info"],
    # evaluate
    "evaluate malicious inception": E + ["--inception", "{evil}", "--cleanfid-inception", "none"],
    "evaluate malicious clean-fid inception": E + ["--inception", "{corrupt}", "--cleanfid-inception",
                                                   "{evil_cleanfid}"],
    "evaluate one image": ["evaluate", "{tmp}/one.npz", "--ref", "{tmp}/samples.npz", "--inception", "{corrupt}",
                           "--cleanfid-inception", "none"],
    "evaluate cache dir is a file": E[:-1] + ["{tmp}/file.txt", "--inception", "{corrupt}"],
    "evaluate missing samples": ["evaluate", "{tmp}/none.npz", "--ref", "{tmp}/samples.npz", "--inception",
                                 "{corrupt}", "--cleanfid-inception", "none"],
    "evaluate missing inception": E + ["--inception", "{tmp}/none.pth"],
    # assets
    "assets root is a file": ["assets", "--root", "{tmp}/file.txt"],
    "assets missing manifest": ["assets", "--manifest", "{tmp}/none.toml"],
    "assets malformed manifest": ["assets", "--manifest", "{tmp}/bad.toml"],
    # suites
    "validate no such suite": ["validate", "nosuch"],
    "mini-spread SiT without a study to add to": ["mini-spread", "--families", "SiT", "--out", "{out}/none.json"],
    "mini-spread unknown family": ["mini-spread", "--families", "DiT,XiT"],
    "ls no such suite": ["ls", "nosuch"],
    "run no such suite": ["run", "nosuch", "--out", "{out}"],
    "run out is a file": ["run", "table1", "--out", "{tmp}/file.txt"],
    "run corrupt baseline": ["run", "table1", "--out", "{out}", "--baseline", "{tmp}/bad.json"],
    "run unknown profile": ["run", "table1", "--out", "{out}", "--profile", "bogus"],
    "run file name too long": ["run", "{tmp}/long.toml", "--out", "{out}"],
    "run assets root is a file": ["run", "table1", "--out", "{out}", "--assets", "{tmp}/file.txt"],
    "run corrupt result in out": ["run", "table1", "--out", "{tmp}/corrupt-reports"],
    "report no such folder": ["report", "--out", "{tmp}/none"],
    "report corrupt result": ["report", "--out", "{tmp}/corrupt-reports"],
    "compare missing file": ["compare", "{tmp}/none.json", "{tmp}/nan.json"],
    "compare corrupt file": ["compare", "{tmp}/bad.json", "{tmp}/nan.json"],
    "compare value not a number": ["compare", "{tmp}/nan.json", "{tmp}/nan.json"],
    "baseline check corrupt result": ["baseline", "check", "--reports", "{tmp}/corrupt-reports", "--baselines", "{out}"],
    "baseline accept corrupt result": ["baseline", "accept", "--reports", "{tmp}/corrupt-reports", "--baselines",
                                       "{out}"],
    "baseline check no results": ["baseline", "check", "--reports", "{out}", "--baselines", "{out}"],
    # train
    "train no out": T,
    "train unknown model": T[:2] + ["NoSuch/2"] + T[3:] + ["--out", "{out}/run"],
    "train malicious init checkpoint": T + ["--init-checkpoint", "{evil}", "--out", "{out}/run"],
    "train malicious resume state": ["train", "--resume", "{run}", "--no-progress", "--device", "cpu"],
    "train zero stop-after": T + ["--stop-after", "0", "--out", "{out}/run"],
    "train ema routers on a DiT": T + ["--no-ema-routers", "--out", "{out}/run"],
    "train out is a file": T + ["--out", "{tmp}/file.txt"],
    # mini-spread
    "mini-spread out is a folder": ["mini-spread", "--out", "{out}"],
    "mini-spread work dir is a file": ["mini-spread", "--out", "{out}/s.json", "--work-dir", "{tmp}/file.txt"],
    # the command line itself
    "no command": [],
    "unknown command": ["frobnicate"],
}
if not CUDA:
    CASES["run cuda without a gpu"] = ["run", "table1", "--out", "{out}", "--device", "cuda"]
    CASES["mini-spread cuda without a gpu"] = ["mini-spread", "--out", "{out}/s.json", "--device", "cuda"]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_error_line_and_nothing_else(case, w, capsys):
    argv = [a.format(**w) for a in CASES[case]]
    before = _snapshot(w["out"])
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors (bench.cli.args.Parser: one line too)
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (case, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len([ln for ln in lines if ln.startswith("error: ")]) == 1, err
    assert "Traceback" not in err + out
    after = _snapshot(w["out"])
    assert {k: after.get(k) for k in before} == before  # what was there is untouched
    assert not w["marker"].exists()  # no pickled code ran


def test_there_are_at_least_forty_cases_and_each_weights_option_meets_a_malicious_file():
    assert len(CASES) >= 40
    hostile = {a for argv in CASES.values() for a in argv if a in ("{evil}", "{evil_cleanfid}", "{run}")}
    assert hostile == {"{evil}", "{evil_cleanfid}", "{run}"}
    options = {argv[i - 1] for argv in CASES.values() for i, a in enumerate(argv) if a in ("{evil}", "{evil_cleanfid}")}
    assert options == {"--ckpt", "--vae", "--inception", "--cleanfid-inception", "--init-checkpoint"}


def test_debug_shows_the_traceback_of_an_input_error(capsys, monkeypatch, tmp_path):
    assert main(["--debug", "info"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("BENCH_DEBUG", "1")
    assert main(["info"]) == 2
    assert "Traceback" in capsys.readouterr().err
    # train reports its own errors (only rank 0 prints): --debug reaches it too
    assert main(["--debug", "train", "--model", "DiT-Mini/2", "--data", "/nonexistent/folder", "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error:")


def test_a_bug_keeps_its_traceback_and_says_it_is_one(capsys, monkeypatch):
    import bench.cli.info as info
    from bench.cli import BUG_REPORT
    monkeypatch.setattr(info, "run", lambda args: 1 / 0)  # register() hands argparse the module's `run`
    assert main(["info", "--list"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Traceback" in err and BUG_REPORT in err
