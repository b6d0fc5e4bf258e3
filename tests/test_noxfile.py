"""noxfile.py's suite sessions, with a stand-in for nox (tests run inside a nox session, without nox itself):
which `bench run` commands each session issues."""
import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class FakeSession:
    def __init__(self, posargs=()):
        self.posargs = list(posargs)
        self.commands = []

    def install(self, *args):
        pass

    def run(self, *args, env=None):
        self.commands.append(list(args))
        if env is not None:
            self.env = env


def load_noxfile(monkeypatch):
    fake = types.ModuleType("nox")
    fake.options = types.SimpleNamespace()
    fake.session = lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))
    monkeypatch.setitem(sys.modules, "nox", fake)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suites_run(session):
    return [c[4] for c in session.commands if c[:4] == ["python", "-m", "bench", "run"]]


def test_reproduce_all_runs_every_suite_once_and_retrains_each_trained_model_once(monkeypatch):
    monkeypatch.chdir(ROOT)
    noxfile = load_noxfile(monkeypatch)
    session = FakeSession(["--profile", "full", "--retrain"])
    noxfile.reproduce_all(session)
    every = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "suites").glob("*.toml") if p.name != "assets.toml")
    assert sorted(suites_run(session)) == every and suites_run(session)[0] == "suites/table1.toml"
    retrained = [c[4] for c in session.commands if "--retrain" in c]
    assert retrained == list(noxfile.TRAINING_SUITES)  # one DYDIT_RETRAIN_SINCE: a shared model is rebuilt once
    assert float(session.env["DYDIT_RETRAIN_SINCE"]) > 0
    assert all("--profile" in c for c in session.commands if c[:4] == ["python", "-m", "bench", "run"])
    assert session.commands[-1][:4] == ["python", "-m", "bench", "report"]


def test_reproduce_mini_runs_the_mini_and_its_tables(monkeypatch):
    monkeypatch.chdir(ROOT)
    noxfile = load_noxfile(monkeypatch)
    session = FakeSession(["--retrain"])
    noxfile.reproduce_mini(session)
    assert suites_run(session) == list(noxfile.MINI_SUITES)
    assert [c[4] for c in session.commands if "--retrain" in c] == list(noxfile.MINI_SUITES)
    session = FakeSession(["--retrain"])
    noxfile.reproduce_dyditpp_mini(session)
    assert suites_run(session) == ["suites/dyditpp-mini.toml", "suites/dyflux-mini.toml"]
    assert [c[4] for c in session.commands if "--retrain" in c] == ["suites/dyditpp-mini.toml", "suites/dyflux-mini.toml"]
    session = FakeSession(["--retrain"])
    noxfile.reproduce_video_mini(session)
    assert suites_run(session) == ["suites/latte-mini.toml"]
    assert [c[4] for c in session.commands if "--retrain" in c] == ["suites/latte-mini.toml"]


def test_reproduce_scaling_runs_both_scaling_suites_and_retrains_once(monkeypatch):
    monkeypatch.chdir(ROOT)
    noxfile = load_noxfile(monkeypatch)
    session = FakeSession(["--retrain"])
    noxfile.reproduce_scaling(session)
    assert suites_run(session) == ["suites/scaling.toml", "suites/scaling-mini.toml"]
    assert [c[4] for c in session.commands if "--retrain" in c] == ["suites/scaling-mini.toml"]
    assert "DYDIT_RETRAIN_SINCE" in session.env


def test_reproduce_ci_runs_the_ci_profile_of_the_suites_that_have_one_and_the_gate_fails_closed(monkeypatch):
    from bench.cli.estimate import CI_SUITES
    from bench.suite import load_suite
    monkeypatch.chdir(ROOT)
    noxfile = load_noxfile(monkeypatch)
    session = FakeSession()
    noxfile.reproduce_ci(session)
    assert suites_run(session) == list(noxfile.CI_SUITES) == [f"suites/{name}.toml" for name in CI_SUITES]
    assert all(c[5:7] == ["--profile", "ci"] for c in session.commands)
    with_ci = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "suites").glob("*.toml") if p.name != "assets.toml"
                     and any("ci" in cell.profiles for _, cell in load_suite(p).cells()))
    assert with_ci == sorted(noxfile.CI_SUITES)  # every suite with a ci cell, and no other
    gate = FakeSession(["check", "--require"])
    noxfile.gate(gate)
    assert gate.commands[0][3:5] == ["baseline", "check"] and gate.commands[0][-1] == "--require"
