"""The CI workflow files (.github/workflows): valid GitHub Actions workflows by check-jsonschema's vendored
schema (offline; actionlint has no wheel on PyPI), and every nox session they call exists."""
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def schema_check(*paths):
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, paths)], capture_output=True, text=True)


def nox_sessions():
    """Session names of noxfile.py: the decorator's name=..., else the function's name."""
    names = set()
    for node in ast.parse((ROOT / "noxfile.py").read_text()).body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "nox.session":
                    given = [k.value.value for k in deco.keywords if k.arg == "name"]
                    names.add(given[0] if given else node.name)
    return names


def test_the_workflows_follow_the_github_actions_schema():
    assert {p.name for p in WORKFLOWS} == {"cpu.yml", "gpu-regression.yml"}
    proc = schema_check(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_fails_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text((ROOT / ".github/workflows/gpu-regression.yml").read_text().replace("runs-on:", "run-on:"))
    proc = schema_check(bad)
    assert proc.returncode != 0 and "run-on" in proc.stdout


def test_the_workflows_run_sessions_that_exist_and_the_cpu_one_mirrors_ci():
    sessions = nox_sessions()
    called = set()
    for path in WORKFLOWS:
        called |= set(re.findall(r"tools/run_nox\.py -s ([\w-]+)", path.read_text()))
    assert called == {"assets", "reproduce-ci", "reproduce-all", "gate"} and called <= sessions
    gpu = (ROOT / ".github/workflows/gpu-regression.yml").read_text()
    assert "self-hosted" in gpu and "DYDIT_ASSETS" in gpu and "--profile full" in gpu and "upload-artifact" in gpu
    assert "bash .ci/run" in (ROOT / ".github/workflows/cpu.yml").read_text()
    assert "tools/run_nox.py -s tests" in (ROOT / ".ci/run").read_text()


def test_pushes_and_pull_requests_run_the_ci_profile_and_the_schedule_runs_the_full_one():
    import yaml
    gpu = yaml.safe_load((ROOT / ".github/workflows/gpu-regression.yml").read_text())
    triggers = gpu[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    ci, full = gpu["jobs"]["ci"], gpu["jobs"]["full"]

    def runs(job):
        return " ".join(step.get("run", "") for step in job["steps"])

    def events(job):
        return set(re.findall(r"github\.event_name == '(\w+)'", job["if"]))

    assert events(ci) == {"push", "pull_request"} and events(full) == {"schedule", "workflow_dispatch"}
    assert "-s reproduce-ci" in runs(ci) and "--profile full" not in runs(ci) and ci["timeout-minutes"] <= 60
    assert "-s reproduce-all -- --profile full" in runs(full)
    for job in (ci, full):  # the gate fails closed: no baseline for this runner is a failure, not a pass
        assert "-s gate -- check --require" in runs(job)
    assert "head.repo.full_name == github.repository" in ci["if"]  # no fork's code on the self-hosted runner
