"""`shiplib.bench` and `python -m shiplib bench` on a tiny ViT (the saved ViT-B/16 figures: results/bench/)."""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from shiplib.__main__ import main
import shiplib.bench as bench
from shiplib.bench import (LOAD_TOLERANCE, BenchSettings, OtherLoadMeter, bench_summary, busy_cpu_seconds,
                           count_flops, efficiency_note, efficiency_table, format_efficiency, is_under_load,
                           load_bench, peak_memory_bytes, run_bench, table_settings)
from shiplib.errors import ConfigError
from shiplib.methods import get_method, list_methods

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**TINY)


@pytest.mark.parametrize("method", list_methods())
def test_every_method_is_measured(method):
    r = run_bench(BenchSettings(method, tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, num_classes=3,
                                progress=False, options={"prompt_length": 2} if method == "ship" else None))
    for key in ("timm_eval_s", "eval_s", "train_s", "eval_vs_timm", "timm_eval_mem_mb", "eval_mem_mb",
                "train_mem_mb", "trainable_params", "total_params"):
        assert key in r and r[key] == r[key], key  # present and not NaN
    assert r["eval_s"] > 0 and r["train_s"] > 0 and r["train_mem_mb"] > 0
    assert 0 < r["trainable_params"] <= r["total_params"]
    assert ("reference_train_s" in r) == (method == "ship")
    json.dumps(r)  # the CLI prints it as one JSON object


def test_ship_reports_the_reference_implementation_and_ratios():
    r = run_bench(BenchSettings("ship", tiny_vit(), batch=2, threads=1, repeats=2, warmup=0, num_classes=3,
                                progress=False, options={"prompt_length": 3}, floor=True))
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


def test_ship_bench_levels_follow_the_depth():
    ship = get_method("ship")
    assert ship.bench_options(VisionTransformer(**{**TINY, "depth": 12}))["levels"] == [0, 2, 4, 6, 8, 11]
    levels = ship.bench_options(tiny_vit())["levels"]
    assert levels[0] == 0 and levels[-1] == 3 and levels == sorted(set(levels))


def test_the_bench_names_no_method_and_asks_the_method_hooks():
    source = Path(bench.__file__).read_text()
    assert not re.search(r"method\s*[!=]=\s*['\"]", source) and ".config.implementation" not in source
    vit = tiny_vit()
    for method in list_methods():  # every method builds from random weights with its own bench options
        model = bench.build_bench_model(method, vit, num_classes=3)
        assert model.method == method
    ship, spt = get_method("ship"), get_method("spt")
    assert ship.data_key(ship.config_class.from_options("ship", ship.bench_options(vit))) is None
    assert spt.data_key(spt.config_class.from_options("spt", spt.bench_options(vit))) is not None


def test_efficiency_table_has_one_row_per_implementation():
    settings = table_settings(backbone=tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, num_classes=3,
                              progress=False)
    table, raw = efficiency_table(["linear", "ship"], settings, options={"ship": {"prompt_length": 2}})
    assert list(table["method"]) == ["linear", "ship", "ship (reference)"]
    assert (table["eval_gflops_per_image"] > 0).all() and (table["train_images_per_s"] > 0).all()
    assert table.loc[0, "trainable_params"] < table.loc[1, "trainable_params"]
    for col in ("eval_vs_timm", "train_vs_timm_floor", "timm_eval_s", "timm_train_floor_s", "load_before",
                "load_after", "under_load"):
        assert table[col].notna().all(), col
    ship = raw["ship"]
    assert table.loc[1, "eval_vs_timm"] == ship["eval_vs_timm"]
    assert table.loc[2, "eval_vs_timm"] == ship["reference_eval_vs_timm"]
    assert table.loc[2, "train_vs_timm_floor"] == ship["reference_train_vs_timm_train_floor"]
    assert ship["load_average"]["before"] and ship["cpu_cores"] >= 1 and isinstance(ship["under_load"], bool)


def fake_times(per_round: dict):
    """A `time_interleaved` stand-in returning fixed seconds per round for each variant (real calls skipped)."""
    def timer(variants, repeats, warmup, device=None, progress=True):
        return {name: list(per_round[name.replace("reference_", "")])[:repeats] for name in variants}

    return timer


def test_efficiency_ratios_come_from_the_same_rounds(monkeypatch):
    # round 2 ran while the machine was busy: every variant slowed down 10x in it. The ratios of the same rounds
    # keep 1.1; the ratio of the median seconds (0.11) mixes a fast round of one variant with a slow one of the other.
    rounds = {"timm_eval": [1.0, 10.0, 10.0], "eval": [1.1, 11.0, 1.0], "train": [2.0, 20.0, 2.2],
              "timm_train_floor": [1.0, 10.0, 1.0]}
    monkeypatch.setattr(bench, "time_interleaved", fake_times(rounds))
    table, raw = efficiency_table(["linear"], table_settings(backbone=tiny_vit(), batch=2, threads=1, repeats=3,
                                                             warmup=0, num_classes=3, progress=False))
    row = table.iloc[0]
    assert row["eval_vs_timm"] == pytest.approx(1.1) and row["train_vs_timm_floor"] == pytest.approx(2.0)
    assert row["eval_s"] == pytest.approx(1.1) and row["timm_eval_s"] == pytest.approx(10.0)  # absolute medians
    assert row["eval_images_per_s"] == pytest.approx(2 / 1.1)


def test_under_load_rule():
    assert not is_under_load(0.0, cores=2, threads=2) and not is_under_load(LOAD_TOLERANCE, 2, 2)
    assert is_under_load(0.5, cores=2, threads=2)
    assert not is_under_load(1.1, cores=2, threads=1) and is_under_load(1.5, cores=2, threads=1)
    assert not is_under_load(3.0, cores=8, threads=2)
    assert is_under_load(None, cores=2, threads=1, load_before=1.6)  # no /proc/stat: the 1-min load average
    assert not is_under_load(None, cores=2, threads=1, load_before=None)


def test_a_loaded_machine_marks_the_rows(monkeypatch):
    monkeypatch.setattr(bench, "usable_cores", lambda: 2)
    monkeypatch.setattr(OtherLoadMeter, "stop", lambda self: 1.5)  # other processes kept 1.5 cores busy
    settings = table_settings(backbone=tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, num_classes=3,
                              progress=False)
    table, raw = efficiency_table(["linear"], settings)
    assert table["under_load"].tolist() == [True] and table["other_cpu"].tolist() == [1.5]
    assert raw["linear"]["under_load"] is True and "under load" in raw["linear"]["under_load_rule"]
    monkeypatch.setattr(OtherLoadMeter, "stop", lambda self: 0.05)
    table, _ = efficiency_table(["linear"], settings)
    assert table["under_load"].tolist() == [False]
    assert format_efficiency(table).loc["linear", "under load"] == "no"


@pytest.mark.skipif(busy_cpu_seconds() is None, reason="needs /proc/stat (Linux)")
def test_other_processes_busy_time_is_measured():
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        meter = OtherLoadMeter().start()
        time.sleep(1.5)  # this process idles; the child spins
        other = meter.stop()
    finally:
        child.kill()
        child.wait()
    assert other >= 0.5


def synthetic_table(seconds: float):
    """An efficiency_table frame with fixed counts and the given timing scale."""
    import pandas as pd

    return pd.DataFrame([dict(method="ship", trainable_params=41380, total_params=1394692,
                              **{"trainable_%": 100 * 41380 / 1394692}, eval_gflops_per_image=267.463532544,
                              train_gflops_per_image=0.540, eval_vs_timm=1.0188, train_vs_timm_floor=1.139,
                              eval_s=0.7988 * seconds, train_s=1.962 * seconds, timm_eval_s=0.782 * seconds,
                              timm_train_floor_s=1.719 * seconds, eval_images_per_s=8 / (0.0503 * seconds),
                              train_images_per_s=8 / (0.151 * seconds), eval_mem_mb=3.5802, train_mem_mb=28.9416,
                              load_before=0.5, load_after=1.0, other_cpu=0.05 * seconds, under_load=seconds > 1)])


def test_format_efficiency_renders_units():
    out = format_efficiency(synthetic_table(1.0))
    row = out.loc["ship"]
    assert row["eval time / batch"] == "0.799 s" and row["timm eval / batch"] == "0.782 s"
    assert row["eval time vs timm"] == "1.02\u00d7" and row["train time vs timm floor"] == "1.14\u00d7"
    assert row["eval throughput"] == "159 img/s"
    assert row["trainable params"] == "41,380" and row["trainable share"] == "2.97 %"
    assert row["eval FLOPs / image"] == "267 GFLOPs" and row["train FLOPs / image"] == "540 MFLOPs"
    assert row["eval peak memory"] == "3.58 MB" and row["train peak memory"] == "28.9 MB"
    assert row["under load"] == "no" and row["other processes"] == "0.05 cores"
    assert "under load" not in format_efficiency(synthetic_table(1.0), load=False)
    note = efficiency_note()
    assert "same interleaved rounds" in note and "Under load" in note


def test_formatted_efficiency_differs_only_in_measured_figures():
    """After replacing the measured figures by placeholders (a notebook sanitizer), a fast and a slow machine
    render the same text and HTML: the layout does not depend on the numbers."""
    def sanitize(text):
        for pattern, repl in ((r"\s*\d+(\.\d+)? s\b", " S"), (r"\s*\d+(\.\d+)?\u00d7", " R"),
                              (r"\s*\d+(\.\d+)? img/s", " T"), (r"\s*\d+(\.\d+)? cores", " C"),
                              (r"\s+(yes|no)\b", " L"), (r">(yes|no)<", ">L<")):
            text = re.sub(pattern, repl, text)
        return text

    fast, slow = format_efficiency(synthetic_table(0.001)), format_efficiency(synthetic_table(90.0))
    assert fast.to_string() != slow.to_string()
    assert sanitize(fast.to_string()) == sanitize(slow.to_string())
    assert sanitize(fast.to_html()) == sanitize(slow.to_html())
    for label in fast.columns:  # labels are the widest cells: the plain-text columns keep their width
        assert len(label) > max(len(v) for v in [*fast[label], *slow[label]]), label


def test_saved_benchmark_summary_is_deterministic_and_has_no_targets():
    saved = load_bench(Path(__file__).resolve().parents[1] / "results" / "bench" / "ship_vit_base_patch16_224.json")
    summary = bench_summary(saved)
    assert list(summary.columns) == ["meaning", "value"] and summary.index.name == "figure"
    assert summary.loc["eval_vs_timm", "value"] == "1.019" and summary.loc["train_mem_mb", "value"] == "581.357"
    assert summary.loc["eval_gflops", "value"] == "267.464"
    text = (summary.to_string() + summary.to_html()).lower()
    assert "target" not in text and "met" not in summary.columns and "issue" not in text
    assert summary.to_string() == bench_summary(dict(saved)).to_string()
    assert not hasattr(bench, "TARGETS")
    source = Path(bench.__file__).read_text().lower()
    assert "target" not in source and "issue" not in source


def test_peak_memory_and_flops_do_not_depend_on_rounds_or_threads():
    # SHIP's training step on the mini backbone has data-dependent shapes (rows shared across samples are split
    # where their drop-path draws differ), so its memory and FLOPs depend on the random draws of that call
    def measure(repeats, threads):
        r = run_bench(BenchSettings("ship", "mini", batch=4, threads=threads, repeats=repeats, warmup=0,
                                    progress=False, flops=True))
        return {k: v for k, v in r.items() if k.endswith("_mem_mb") or k.endswith("_gflops")}

    assert measure(repeats=1, threads=1) == measure(repeats=2, threads=2)


def test_peak_memory_of_repeated_calls_is_steady():
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(32, 64)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.dropout(model(x), 0.5).sum().backward()
        opt.step()

    step()
    values = [peak_memory_bytes(step, seed=0, warmup=1) for _ in range(3)]
    assert len(set(values)) == 1 and values[0] > 0


def test_timm_floor_takes_no_weight_gradients():
    vit = tiny_vit()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    vit.head = torch.nn.Linear(32, 3)
    bench._timm_floor_fn(vit, x, y)()
    assert all(p.grad is None for p in vit.parameters())


def test_bench_bad_input_fails_clearly():
    with pytest.raises(ConfigError, match=r"batch must be an int >= 1, got 0; e.g. --batch 8"):
        BenchSettings("linear", tiny_vit(), batch=0, progress=False)
    with pytest.raises(ConfigError, match=r"threads must be an int >= 1, got 0; e.g. --threads 2"):
        BenchSettings("linear", tiny_vit(), threads=0, progress=False)
    with pytest.raises(ConfigError, match="warm-up round.*--warmup 1"):
        BenchSettings("linear", tiny_vit(), warmup=0, compile=True)
    with pytest.raises(ConfigError, match="Valid methods: .*ship"):
        BenchSettings("nope", tiny_vit(), progress=False)
    with pytest.raises(ConfigError, match="unknown option 'oops' for method 'ship'.*Valid ship options"):
        BenchSettings("ship", options=["oops=1"])
    assert BenchSettings("ship", options=["K=4", "levels=[0, 2]"]).options == {"prompt_length": 4, "levels": [0, 2]}
    with pytest.raises(ConfigError, match="invalid option for method 'ship'"):
        run_bench(BenchSettings("ship", tiny_vit(), options={"drop_path_rate": 2.0}, progress=False))


def test_cli_prints_one_json_object(tiny_vit_file, capsys):
    code = main(["bench", "--method", "vpt_deep", "--backbone", str(tiny_vit_file), "--batch", "2", "--threads",
                 "1", "--repeats", "1", "--warmup", "0", "--json", "--no-progress", "--set", "num_prompts=2"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "vpt_deep" and r["batch"] == 2 and r["threads"] == 1 and r["eval_vs_timm"] > 0
    assert isinstance(r["under_load"], bool) and r["cpu_cores"] >= 1 and len(r["load_average"]["after"]) == 3


def test_cli_bad_option_is_reported():
    p = subprocess.run([sys.executable, "-m", "shiplib", "bench", "--set", "oops"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "--set expects key=value" in p.stderr and "'oops'" in p.stderr
    run = subprocess.run([sys.executable, "-m", "shiplib", "run", "--task", "svhn", "--method", "ship", "--set",
                          "oops"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr == p.stderr  # the same parser and message as `run --set`


def test_cli_unknown_method_lists_the_valid_ones(tiny_vit_file, capsys):
    assert main(["bench", "--method", "nope", "--backbone", str(tiny_vit_file), "--no-progress"]) == 2
    assert re.search("unknown method 'nope'.*Valid methods", capsys.readouterr().err)


@pytest.mark.parametrize("method", list_methods())
def test_flops_are_counted_for_every_method(method):
    r = run_bench(BenchSettings(method, tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, num_classes=3,
                                progress=False, memory=False, flops=True,
                                options={"prompt_length": 2} if method == "ship" else None))
    assert r["train_gflops"] > r["eval_gflops"] >= r["timm_eval_gflops"] * 0.5 > 0


def test_no_progress_output_when_asked(capfd, monkeypatch):
    monkeypatch.setenv("SHIPLIB_PROGRESS", "lines")  # as in papermill/nbval: bars would print lines
    run_bench(BenchSettings("spt", "mini", batch=2, threads=1, repeats=1, warmup=0, num_classes=3, progress=False,
                            memory=False))  # building SPT on the mini backbone reports its prompt initialisation
    out, err = capfd.readouterr()
    assert "SPT" not in out + err and "bench rounds" not in out + err
    import os
    assert os.environ["SHIPLIB_PROGRESS"] == "lines"  # restored


def test_every_variant_runs_at_the_asked_precision(capsys):
    r = run_bench(BenchSettings("ship", tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, num_classes=3,
                                progress=False, options={"prompt_length": 2}, floor=True, flops=True,
                                precision="bf16"))
    assert r["precision"] == "bf16" and r["train_s"] > 0 and r["timm_train_floor_s"] > 0 and r["train_gflops"] > 0
    assert run_bench(BenchSettings("linear", tiny_vit(), batch=2, threads=1, repeats=1, warmup=0, progress=False,
                                   memory=False))["precision"] == "fp32"
    assert main(["bench", "--method", "linear", "--precision", "tf32", "--no-progress"]) == 2
    assert "tf32 needs a CUDA GPU" in capsys.readouterr().err


def test_the_efficiency_notebook_says_which_settings_it_benchmarks():
    """The intro's list of settings is what `efficiency_table` builds (defaults, bench options, a 100-class head)."""
    import inspect

    import nbformat

    from shiplib import method_options
    from shiplib.backbones import create_backbone
    from shiplib.data import get_task, list_tasks

    intro = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "efficiency.ipynb", 4).cells[0].source
    intro = " ".join(intro.split())
    assert inspect.signature(bench.efficiency_table).parameters["settings"].default is None
    assert bench.TABLE_SETTINGS.num_classes == 100 and bench.table_settings(batch=2).num_classes == 100
    assert "100-class head" in intro
    assert method_options("vpt_deep")["num_prompts"] == method_options("spt")["num_prompts"] == 50
    assert method_options("sep")["num_prompts"] == 16 and method_options("ship")["prompt_length"] == 50
    assert "50 prompt tokens for VPT and SPT" in intro and "16 for SEP" in intro and "SHIP with K=50" in intro
    vit = create_backbone("mini", pretrained=False)
    assert get_method("spt").bench_options(vit) == {"init": "random"} and "initialised at random" in intro
    ship = get_method("ship").bench_options(vit)
    assert ship["prompt_length"] == 50 and tuple(ship["prototypes"].shape)[0] == 200 and "200 attribute" in intro
    classes = [get_task(t).num_classes for t in list_tasks(benchmark="mini")]
    assert f"({min(classes)} to {max(classes)} classes)" in intro
