"""One process of the multi-process test (tests/test_multiprocess.py), run as a script.

    python tests/multiprocess_worker.py OUT_DIR N_SEEDS [PORT NUM_PROCESSES PROCESS_ID]

Trains the tiny recipe of tests/test_run.py into OUT_DIR, and prints, as its last line, the JSON
list of the files under OUT_DIR outside checkpoints/ (Orbax's own) that this process opened for
writing or renamed into place: what only process 0 may do.
"""

import builtins
import io
import json
import os
import pathlib
import sys

import jax

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))

out_dir = pathlib.Path(sys.argv[1]).absolute()
written = set()


def _record(path):
    path = pathlib.Path(os.fspath(path)).absolute()
    if path.is_relative_to(out_dir) and not path.is_relative_to(out_dir / "checkpoints"):
        name = str(path.relative_to(out_dir))
        # An event file is named by the time it was opened: keep the seed folder only.
        written.add(name.split(".out.tfevents.")[0] if ".out.tfevents." in name else name)


def _watching_open(opener):
    def watched(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            _record(file)
        return opener(file, mode, *args, **kwargs)

    return watched


# logging's FileHandler looks `open` up when it opens, so it is watched too.
builtins.open = io.open = _watching_open(builtins.open)
_replace = os.replace
os.replace = lambda src, dst, *a, **k: (_record(dst), _replace(src, dst, *a, **k))[1]

if len(sys.argv) > 3:
    port, num_processes, process_id = map(int, sys.argv[3:6])
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)

# Imported once the processes have joined (importing them does not start a backend, but keep it so).
from ouroboros_jax.training.run import train_and_evaluate
from tests.test_run import tiny_run_config

# The numba encoder kernels, which `auto` picks for the default model (not for this tiny one), and
# beside them the rollout kernel `auto` picks: numba (several devices hung with them once).
train_and_evaluate(tiny_run_config(out_dir, n_seeds=int(sys.argv[2]), encoder_scan="numba"))
print(json.dumps(sorted(written)))
