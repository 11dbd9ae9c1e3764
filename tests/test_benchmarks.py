"""benchmarks/gpu_report.sh --quick: every GPU benchmark's tiny preset runs on CPU and writes the
JSON lines docs/performance.md is filled from (the measurements themselves are not tested)."""

import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).parent.parent


def _records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # 3 minutes of subprocesses: CI's budget (the script is run on every lent GPU)
def test_the_gpu_report_writes_every_benchmark_s_records(tmp_path):
    result = subprocess.run([str(REPO / "benchmarks" / "gpu_report.sh"), "--quick", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == [
        "memory.jsonl", "recipe_time.jsonl", "rollout.jsonl", "seed_scaling.jsonl", "train_step.jsonl"]

    steps = _records(report / "train_step.jsonl")
    measured = {(r["device"]["matmul_precision"], r["config"]["encoder_scan"]) for r in steps}
    assert measured == {(p, s) for p in ("highest", "default") for s in ("associative", "fused")}
    assert {r["config"]["backend"] for r in _records(report / "rollout.jsonl")} == {"scan", "deer"}
    assert [r["config"]["seeds"] for r in _records(report / "seed_scaling.jsonl")] == [1, 2]

    *programs, per_seed = _records(report / "memory.jsonl")
    peaks = [r["memory_bytes"]["peak"] for r in programs]
    assert peaks[0] < peaks[1]  # a second seed needs more memory
    assert peaks[2] < peaks[1]  # ... less when the two run one chunk after the other
    assert per_seed["peak_per_seed_bytes"] == peaks[1] - peaks[0]
    assert 0 < per_seed["chunked_peak_per_seed_bytes"] < per_seed["peak_per_seed_bytes"]

    (recipe,) = _records(report / "recipe_time.jsonl")
    parts = ("compile_s", "train_s", "evaluation_s", "checkpoint_s")
    assert recipe["total_s"] == sum(recipe[k] for k in parts) and recipe["train_s"] > 0
