"""`shiplib.bench` and `python -m shiplib bench` on a tiny ViT (the ViT-B/16 figures are in the issue's note)."""
import json
import subprocess
import sys

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from shiplib.__main__ import main
from shiplib.bench import count_flops, efficiency_table, peak_memory_bytes, run_bench, ship_bench_levels
from shiplib.methods import list_methods

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**TINY)


@pytest.mark.parametrize("method", list_methods())
def test_every_method_is_measured(method):
    r = run_bench(method, tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, num_classes=3, progress=False,
                  options={"prompt_length": 2} if method == "ship" else None)
    for key in ("timm_eval_s", "eval_s", "train_s", "eval_vs_timm", "timm_eval_mem_mb", "eval_mem_mb",
                "train_mem_mb", "trainable_params", "total_params"):
        assert key in r and r[key] == r[key], key  # present and not NaN
    assert r["eval_s"] > 0 and r["train_s"] > 0 and r["train_mem_mb"] > 0
    assert 0 < r["trainable_params"] <= r["total_params"]
    assert ("reference_train_s" in r) == (method == "ship")
    json.dumps(r)  # the CLI prints it as one JSON object


def test_ship_reports_the_reference_implementation_and_ratios():
    r = run_bench("ship", tiny_vit(), batch=2, threads=1, repeats=2, warmup=0, num_classes=3, progress=False,
                  options={"prompt_length": 3}, floor=True)
    for key in ("reference_eval_s", "reference_train_s", "reference_eval_speedup", "reference_train_speedup",
                "train_mem_vs_reference", "reference_train_mem_mb", "timm_train_floor_s"):
        assert r[key] > 0, key
    ratios = [a / b for a, b in zip(r["samples_s"]["reference_train"], r["samples_s"]["train"])]
    assert min(ratios) - 1e-3 <= r["reference_train_speedup"] <= max(ratios) + 1e-3  # median of rounded samples


def test_peak_memory_sees_a_large_temporary():
    small = peak_memory_bytes(lambda: torch.ones(10).sum())
    big = peak_memory_bytes(lambda: (torch.ones(1000, 1000) * 2).sum())
    assert big >= 4 * 1000 * 1000 > small


def test_count_flops_counts_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_sdpa_flops_are_counted():
    q = torch.randn(1, 2, 5, 4)
    flops = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 4 * 1 * 2 * 5 * 5 * 4  # QK^T and AV, 2 FLOPs per multiply-add


def test_levels_follow_the_depth():
    assert ship_bench_levels(12) == [0, 2, 4, 6, 8, 11]
    levels = ship_bench_levels(4)
    assert levels[0] == 0 and levels[-1] == 3 and levels == sorted(set(levels))


def test_efficiency_table_has_one_row_per_implementation():
    table, raw = efficiency_table(["linear", "ship"], backbone=tiny_vit(), batch=2, threads=1, repeats=1, warmup=0,
                                  num_classes=3, options={"ship": {"prompt_length": 2}}, progress=False)
    assert list(table["method"]) == ["linear", "ship", "ship (reference)"]
    assert (table["eval_gflops_per_image"] > 0).all() and (table["train_images_per_s"] > 0).all()
    assert table.loc[0, "trainable_params"] < table.loc[1, "trainable_params"]


def test_bench_bad_input_fails_clearly():
    with pytest.raises(ValueError, match="batch and repeats"):
        run_bench("linear", tiny_vit(), batch=0, progress=False)
    with pytest.raises(ValueError, match="threads"):
        run_bench("linear", tiny_vit(), threads=0, progress=False)
    with pytest.raises(KeyError, match="Valid methods: .*ship"):
        run_bench("nope", tiny_vit(), progress=False)


def test_cli_prints_one_json_object(tiny_vit_file, capsys):
    code = main(["bench", "--method", "vpt_deep", "--backbone", str(tiny_vit_file), "--batch", "2", "--threads",
                 "1", "--repeats", "1", "--warmup", "0", "--json", "--no-progress", "--set", "num_prompts=2"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "vpt_deep" and r["batch"] == 2 and r["threads"] == 1 and r["eval_vs_timm"] > 0


def test_cli_bad_option_is_reported():
    p = subprocess.run([sys.executable, "-m", "shiplib", "bench", "--set", "oops"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "KEY=VALUE" in p.stderr


def test_cli_unknown_method_lists_the_valid_ones(tiny_vit_file):
    with pytest.raises(SystemExit, match="unknown method 'nope'.*Valid methods"):
        main(["bench", "--method", "nope", "--backbone", str(tiny_vit_file), "--no-progress"])


@pytest.mark.parametrize("method", list_methods())
def test_flops_are_counted_for_every_method(method):
    r = run_bench(method, tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, num_classes=3, progress=False,
                  memory=False, flops=True, options={"prompt_length": 2} if method == "ship" else None)
    assert r["train_gflops"] > r["eval_gflops"] >= r["timm_eval_gflops"] * 0.5 > 0
