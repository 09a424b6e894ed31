"""The GPU check: its one-line exit without CUDA, and every part of its table run here on CPU with a tiny ViT (the
GPU run takes the same code path with device="cuda")."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shiplib import gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a CUDA device")
def test_without_cuda_the_script_says_so_in_one_line_and_exits_0():
    p = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHON": sys.executable})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines() == [gpu_check.no_gpu_message()]
    assert "no CUDA device" in p.stdout


def test_every_part_of_the_table_runs_on_cpu(tiny_vit_file, tmp_path):
    check = gpu_check.CheckSettings(device="cpu", backbone=str(tiny_vit_file), batch=4, img_size=32, epochs=2,
                                    repeats=1, warmup=0, sizes=dict(train800=12, val200=4, test=6),
                                    options=dict(num_prototypes=8, prompt_length=4))
    rows = gpu_check.run_checks(check, tmp_path)
    by = {(r.part, r.setting, r.figure): r.value for r in rows}
    assert by["speed", "tf32", "skipped"].startswith("precision tf32 needs a CUDA GPU")
    for precision in ("fp32", "bf16"):
        assert by["speed", precision, "SHIP train step"].endswith("× floor)")
        assert "within" in by["logits", f"{precision} vs CPU fp32", "max |difference|"]
    assert by["logits", "fp32 vs CPU fp32", "max |difference|"].startswith("0.00e+00")  # the same device
    run = [r for r in rows if r.part == "run"]
    assert [r.figure for r in run] == ["epoch 0 (train + eval)", "epoch 1 (train + eval)",
                                       "accuracy (random weights)", "peak memory"]
    assert run[0].setting == "bf16, 32 px, 16 images" and run[-1].value == "–"
    table = gpu_check.format_table(rows).splitlines()
    assert len(table) == len(rows) + 1 and table[0].split() == ["part", "setting", "figure", "value"]
