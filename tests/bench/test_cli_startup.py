"""The CLI starts fast: --help, validate, info --list and baseline load no torch, diffusers or metrics library
(bench/cli imports them where a command runs). Asserted on what is imported, not on seconds (no timed tests)."""
import subprocess
import sys

HEAVY = ("torch", "diffusers", "torch_fidelity", "cleanfid", "pandas", "matplotlib")
PROGRAM = f"""
import contextlib, io, sys
from bench.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    for argv in (["--help"], ["sample", "--help"], ["train", "--help"], ["run", "--help"], ["speed", "--help"],
                 ["validate"], ["info", "--list"], ["baseline", "fingerprint", "--reports", sys.argv[1]]):
        try:
            assert main(argv) == 0, argv
        except SystemExit as e:
            assert e.code == 0, argv
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_help_validate_info_list_and_baseline_import_no_heavy_library(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at startup: {proc.stdout.strip()}"


def test_ls_asks_torch_about_cuda_only_where_a_gpu_driver_exists():
    from pathlib import Path

    from bench.runner import GPU_DRIVER_PATHS
    program = ("import contextlib, io, sys\nfrom bench.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
               "    assert main(['ls']) == 0\nprint(','.join(m for m in ('torch', 'diffusers', 'torch_fidelity') "
               "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    driver = sys.platform.startswith("linux") and any(Path(p).exists() for p in GPU_DRIVER_PATHS)
    assert proc.stdout.strip() == ("torch" if driver else "")
