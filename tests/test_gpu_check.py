"""`make gpu-check` (tools/gpu_check.py), rehearsed on the CPU at smoke scale, and its refusal without CUDA."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot happen")
def test_without_cuda_it_refuses_the_paper_tier_with_the_fix_named(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COURSE_DEVICE"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--results", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device here" in proc.stderr and "COURSE_DEVICE=cpu" in proc.stderr
    assert not list(tmp_path.iterdir()), "nothing is written when it refuses"


@pytest.mark.slow
@pytest.mark.notebook
def test_cpu_rehearsal_runs_the_cuda_tests_and_both_papers_paper_tier_in_smoke_mode(tmp_path):
    env = {**os.environ, "COURSE_DEVICE": "cpu"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--results", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["status"] == "ok" and summary["smoke"] and summary["device"].startswith("cpu")
    assert [s["step"] for s in summary["steps"]] == ["cuda tests", "paper tier, one seed"]
    records = sorted(tmp_path.glob("runs/*/*/record.json"))
    assert {r.parent.parent.name for r in records} == {"speedycnet", "edcnn"}
    for record in map(lambda p: json.loads(p.read_text()), records):
        assert record["status"] == "ok" and record["parameters"]["SEED"] == 0
        assert record["device"].startswith("cpu"), "every record names the device that measured it"
    # one seed of the paper grid: WIDTH_MULT 1.0 is the paper tier's
    assert all(json.loads(p.read_text())["parameters"]["WIDTH_MULT"] == 1.0 for p in records)
