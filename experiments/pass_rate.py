"""The pass rate of a recipe: the method's acceptance bar over several file splits and seeds.

    python experiments/pass_rate.py --flagfile=experiments/finch.flags --seeds=1,2,3,4,5
    python experiments/pass_rate.py --flagfile=experiments/finch.flags --seeds=1,2,3 --encoder_scan=numba

Runs the recipe once per `--seed` (each a different file split and different member keys), into
`<out_dir>/seed<s>` (a finished run is read, not retrained), and prints one JSON object: each
run's acceptance items and the rates over the runs. Flags other than this script's own are
passed to `python -m ouroboros_jax.train` as they are (they override the flagfile's).

The bar (docs/results.md): the selected member's validation bounded_frac >= 0.9 at epoch 10 (its
last epoch in a shorter run), validation spec_corr >= 0.5 at the end, and the median cold-start
raw test autonomy > 0. The listening items: the median lead-in level of the model on the test
vocalisations at least 30 dB below its syllable level, and the median onset delay within 10 ms.
Each run is judged by `ouroboros_jax.training.acceptance` (as its report.html judges it).
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

from ouroboros_jax.training.acceptance import acceptance


def run_once(flagfile: str, seed: int, out_dir: pathlib.Path, overrides: list[str]) -> dict:
    """Trains (or reads) one run of the recipe; its acceptance items, or its exit status and last line."""
    command = [sys.executable, "-m", "ouroboros_jax.train", f"--flagfile={flagfile}", f"--seed={seed}",
               f"--out_dir={out_dir}", *overrides]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"seed": seed, "out_dir": str(out_dir), "exit_status": done.returncode, "error": last,
                "passes": False, "listening_passes": False, "wall_s": seconds}
    return {"seed": seed, "out_dir": str(out_dir), **acceptance(out_dir), "wall_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flagfile", required=True, help="the recipe")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated --seed values, one run each")
    parser.add_argument("--out_dir", default=None, help="where the runs go; default runs/pass_rate/<recipe>")
    args, overrides = parser.parse_known_args()
    if not pathlib.Path(args.flagfile).is_file():
        sys.exit(f"error: --flagfile={args.flagfile}: no such file")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        sys.exit(f"error: --seeds={args.seeds}: must be comma-separated integers")
    base = pathlib.Path(args.out_dir or pathlib.Path("runs/pass_rate") / pathlib.Path(args.flagfile).stem)
    runs = []
    for seed in seeds:
        runs.append(run_once(args.flagfile, seed, base / f"seed{seed}", overrides))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"flagfile": args.flagfile, "overrides": overrides, "seeds": seeds,
                      "pass_rate": float(np.mean([r["passes"] for r in runs])),
                      "listening_pass_rate": float(np.mean([r["listening_passes"] for r in runs])),
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
