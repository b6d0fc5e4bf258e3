"""Timings kept between runs: a warm run re-reads what this machine measured instead of timing it again.

A timing is reused only for the same models (their cache keys: trained weights, not random ones), the same
setup, the same timing and model code, and the same machine (its CPU or GPU, thread count, torch version).
`bench run --retime` measures again and replaces what was kept. Each kept timing records when it was measured,
and the report says which timings were reused.

    store = KeptTimings(folder, retime=False)
    value, measured_at = store.get(("mini-speed", model_key, setup), lambda: time_it())
"""
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

import bench
import dydit
from dydit.fileio import write_json_atomic

# source files whose change makes a kept timing stale: all of both packages (what is timed, how, and the FLOPs
# counts kept beside the times); conservative: any code change times again
CODE = sorted(Path(bench.__file__).parent.rglob("*.py")) + sorted(Path(dydit.__file__).parent.rglob("*.py"))


def machine(device) -> dict:
    """What a timing depends on besides the code and models: the processor or GPU, threads, torch."""
    from bench.results import device_name
    return {"device": device_name(str(device)), "threads": torch.get_num_threads(), "torch": torch.__version__}


class KeptTimings:
    """One folder of kept timings (JSON, one per key); retime: measure again and replace."""

    def __init__(self, folder: Path, device, retime: bool = False):
        self.folder, self.device, self.retime = Path(folder), device, retime

    def key(self, parts) -> str:
        """The key of one timing: its parts (JSON-able), this machine and the code."""
        digest = hashlib.sha256(json.dumps([parts, machine(self.device)], sort_keys=True, default=str).encode())
        for path in CODE:
            digest.update(path.read_bytes() if path.is_file() else b"")
        return digest.hexdigest()[:16]

    def get(self, parts, measure: Callable[[], object], what: str = "") -> Tuple[object, str]:
        """(the timing, when it was measured): kept for these parts on this machine, or measured now and kept."""
        path = self.folder / f"timing-{self.key(parts)}.json"
        kept = self._read(path)
        if kept is not None and not self.retime:
            print(f"  {what or parts[0]}: kept from {kept['measured_at']} (same models, code and machine; --retime "
                  f"times it again)")
            return kept["value"], kept["measured_at"]
        value = measure()
        measured_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.folder.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work beside it: shown, not judged
        write_json_atomic({"parts": json.loads(json.dumps(parts, default=str)), "machine": machine(self.device),
                           "measured_at": measured_at, "load_average": load, "value": value}, path)
        return json.loads(json.dumps(value)), measured_at  # what a later run reads back: the same types

    @staticmethod
    def _read(path: Path) -> Optional[dict]:
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # none kept, or a half-written file: measure again
        return kept if isinstance(kept, dict) and {"value", "measured_at"} <= set(kept) else None
