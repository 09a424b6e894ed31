"""run_experiment end to end on a toy task: result file, log, checkpoint, exact resume, skip/conflict rules."""
import json
import time

import pytest
import torch

from shiplib import count_parameters
from shiplib.engine import RunConfig, load_results, read_result, run_experiment
from shiplib.engine.config import ConfigError
from shiplib.engine.results import write_result

from _engine_helpers import Interrupt, tiny_cfg, untimed


def test_result_file_content(tiny_task_root, tiny_vit_file, tmp_path):
    r = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", lr=1e-2))
    path = tmp_path / "results" / "vtab1k" / "svhn" / "linear" / "seed3.json"
    assert path.is_file() and read_result(path) == r
    assert (r["task"], r["benchmark"], r["method"], r["seed"]) == ("svhn", "vtab1k", "linear", 3)
    assert r["protocol"] == "final"
    assert (r["train_split"], r["eval_split"], r["train_size"], r["eval_size"]) == ("train800val200", "test", 64, 24)
    hist = r["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2] and all(h["steps"] == 4 for h in hist)
    assert r["acc_last"] == hist[-1]["eval_acc"]
    assert r["acc_max_over_epochs"] == max(h["eval_acc"] for h in hist) == hist[r["max_epoch"]]["eval_acc"]
    # 3 epochs: the default 10-epoch warm-up is scaled down with the run (to 0), so the cosine starts at once
    assert r["sources"]["warmup_epochs"].startswith("scaled to 0 for epochs=3")
    assert [h["lr"] for h in hist] == pytest.approx([1e-2, 1e-2, 1e-5 + 0.5 * (1e-2 - 1e-5) * 1.5])
    for key in ("loss", "ce", "train_acc", "eval_loss"):
        assert all(key in h for h in hist)
    for h in hist:  # per step: loss, CE, lr and the gradient norm of each trainable part
        assert len(h["step_loss"]) == len(h["step_ce"]) == len(h["step_lr"]) == h["steps"] == 4
        assert set(h["step_grad_norm"]) == {"head"} and len(h["step_grad_norm"]["head"]) == 4
        assert all(n > 0 for n in h["step_grad_norm"]["head"]) and h["step_ce"] == pytest.approx(h["step_loss"])
        assert sum(h["step_ce"]) / 4 == pytest.approx(h["ce"])  # equal batches: the epoch mean is the steps' mean
    assert r["overrides"]["lr"] == 1e-2 and r["sources"]["lr"] == "user"
    assert r["config"]["batch_size"] == 16 and r["config"]["options"]["drop_path_rate"] == 0.0
    assert set(r["versions"]) >= {"torch", "timm", "numpy", "shiplib"}
    assert r["preprocessing"]["preset"] == "ship" and r["preprocessing"]["resize"] == [32, 32]
    assert r["parameters"]["trainable"] == r["parameters"]["head"] == 32 * 10 + 10
    assert r["device"] == "cpu" and r["wall_time_s"] > 0
    log = [json.loads(line) for line in open(tmp_path / "runs/vtab1k/svhn/linear/seed3/log.jsonl")]
    assert log == hist
    ckpt = torch.load(tmp_path / "runs/vtab1k/svhn/linear/seed3/checkpoint.pt", weights_only=True)
    assert set(ckpt["trainable"]) == {"vit.head.weight", "vit.head.bias"}  # no frozen backbone in it
    df = load_results(tmp_path / "results")
    assert len(df) == 1 and df.loc[0, "acc_last"] == r["acc_last"] and df.loc[0, "params.trainable"] == 330


@pytest.mark.parametrize("method,options", [
    ("full", {"drop_path_rate": 0.1}),  # every weight trains, drop path draws random numbers
    ("ship", {"prompt_length": 4, "num_prototypes": 8}),  # prompts + PML + attribute prompts from a cached bank
])
def test_resume_after_interruption_equals_uninterrupted(tiny_task_root, tiny_vit_file, tmp_path, method, options):
    opts = dict(method=method, options=options, lr=1e-3)
    ref = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "a", **opts))

    def crash(epoch, step):
        if (epoch, step) == (1, 2):
            raise Interrupt

    cfg_b = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "b", **opts)
    with pytest.raises(Interrupt):
        run_experiment(cfg_b, on_step=crash)
    assert not (tmp_path / f"b/results/vtab1k/svhn/{method}/seed3.json").exists()
    work = f"runs/vtab1k/svhn/{method}/seed3"
    assert torch.load(tmp_path / "b" / work / "checkpoint.pt", weights_only=True)["epoch"] == 0
    resumed = run_experiment(cfg_b)
    assert resumed["resumed_from_epoch"] == 0 and ref["resumed_from_epoch"] is None
    assert untimed(resumed["history"]) == untimed(ref["history"])
    assert (resumed["acc_last"], resumed["acc_max_over_epochs"]) == (ref["acc_last"], ref["acc_max_over_epochs"])
    wa = torch.load(tmp_path / "a" / work / "checkpoint.pt", weights_only=True)["trainable"]
    wb = torch.load(tmp_path / "b" / work / "checkpoint.pt", weights_only=True)["trainable"]
    assert wa.keys() == wb.keys() and len(wa) > 2
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [json.loads(x) for x in open(tmp_path / "b" / work / "log.jsonl")] == resumed["history"]


def test_finished_run_is_returned_and_conflicts_fail(tiny_task_root, tiny_vit_file, tmp_path):
    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=2)
    first = run_experiment(cfg)
    path = tmp_path / "results/vtab1k/svhn/linear/seed3.json"
    mtime = path.stat().st_mtime_ns
    assert run_experiment(cfg) == first and path.stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match=r"another configuration \(lr: .*tag"):
        run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=2, lr=0.5))
    tagged = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=2, lr=0.5,
                                     tag="lr0.5"))
    assert tagged["tag"] == "lr0.5" and (tmp_path / "results/vtab1k/svhn/linear+lr0.5/seed3.json").is_file()


def test_checkpoint_of_another_configuration_is_refused(tiny_task_root, tiny_vit_file, tmp_path):
    def crash(epoch, step):
        raise Interrupt

    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=2, eval_every=0)
    with pytest.raises(Interrupt):
        run_experiment(cfg, on_step=lambda e, s: crash(e, s) if e == 1 else None)
    other = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=2, eval_every=0, lr=0.1)
    with pytest.raises(ConfigError, match="checkpoint .* another configuration"):
        run_experiment(other)
    fresh = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=2,
                                    eval_every=0, lr=0.1, resume=False))
    assert fresh["resumed_from_epoch"] is None and fresh["eval_epochs"] == [1]
    assert "eval_acc" not in fresh["history"][0] and fresh["max_epoch"] == 1


def test_tune_protocol_uses_val_split(tiny_task_root, tiny_vit_file, tmp_path):
    r = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=1, protocol="tune"))
    assert (r["protocol"], r["train_split"], r["eval_split"], r["train_size"], r["eval_size"]) == (
        "tune", "train800", "val200", 48, 16)
    assert (tmp_path / "results/tune/vtab1k/svhn/linear/seed3.json").is_file()
    assert load_results(tmp_path / "results", protocol="final").empty


def test_spt_prompt_init_is_computed_from_the_train_images_once_then_cached(tiny_task_root, tiny_vit_file, tmp_path):
    spt = dict(method="spt", epochs=1, options={"num_prompts": 4})
    r = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, **spt))
    assert r["parameters"]["trainable_without_head"] > 0 and r["acc_last"] >= 0
    assert r["hierarchy"]["computed"] == ["init_prompts"] and not r["hierarchy"]["from_cache"]
    again = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, **spt), force=True)
    assert again["hierarchy"]["from_cache"] and again["hierarchy"]["cache"] == r["hierarchy"]["cache"]
    assert untimed(again["history"]) == untimed(r["history"])  # the cached init trains the same run


def test_result_write_is_atomic(tmp_path, monkeypatch):
    import shiplib.utils.io as io

    path = tmp_path / "r" / "seed0.json"
    write_result(path, {"acc_last": 1.0})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_result(path, {"acc_last": 2.0})
    assert json.loads(path.read_text())["acc_last"] == 1.0
    assert [p.name for p in path.parent.iterdir()] == ["seed0.json"]  # no temp file left


def test_missing_data_fails_fast_with_data_layer_message(tiny_vit_file, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="task 'svhn' not found"):
        run_experiment(tiny_cfg(tmp_path / "empty", tiny_vit_file, tmp_path, method="linear"))
    assert time.perf_counter() - t0 < 10


def test_wrong_image_size_for_backbone_fails(tiny_task_root, tiny_vit_file, tmp_path):
    with pytest.raises(ConfigError, match="expects 32x32 images but img_size=64"):
        run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", img_size=64))


def test_parameter_counts_are_count_parameters(tiny_task_root, tiny_vit_file, tmp_path):
    from shiplib import build_model

    r = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="vpt_deep", epochs=1,
                                options={"num_prompts": 2}))
    model = build_model("vpt_deep", backbone=str(tiny_vit_file), num_classes=10, num_prompts=2)
    assert r["parameters"] == count_parameters(model)


@pytest.mark.slow
def test_killed_subprocess_resumes_to_the_same_result(tiny_vit_file, tmp_path):
    """kill -9 a real `python -m shiplib run` mid-training, start it again, compare with an uninterrupted run."""
    import subprocess
    import sys

    from conftest import write_tiny_task

    root = tmp_path / "data"
    write_tiny_task(root, "svhn", sizes=dict(train800=400, val200=16, test=48))
    args = [sys.executable, "-m", "shiplib", "run", "--task", "svhn", "--method", "full", "--seed", "4",
            "--epochs", "4", "--set", f"backbone={tiny_vit_file}", "--set", "img_size=32", "--set", "batch_size=16",
            "--set", "eval_every=1", "--data-root", str(root), "--threads", "1", "--no-progress"]

    def where(name):
        return ["--results", str(tmp_path / name / "results"), "--runs", str(tmp_path / name / "runs")]

    subprocess.run(args + where("ref"), check=True, capture_output=True, timeout=300)
    log = tmp_path / "killed/runs/vtab1k/svhn/full/seed4/log.jsonl"
    proc = subprocess.Popen(args + where("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= 1:
            time.sleep(0.3)  # into the next epoch
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the toy task bigger"
    proc.kill()
    proc.wait()
    assert not (tmp_path / "killed/results/vtab1k/svhn/full/seed4.json").exists()
    subprocess.run(args + where("killed"), check=True, capture_output=True, timeout=300)
    ref = read_result(tmp_path / "ref/results/vtab1k/svhn/full/seed4.json")
    got = read_result(tmp_path / "killed/results/vtab1k/svhn/full/seed4.json")
    assert got["resumed_from_epoch"] is not None
    assert untimed(got["history"]) == untimed(ref["history"]) and got["acc_last"] == ref["acc_last"]
    wa = torch.load(tmp_path / "ref/runs/vtab1k/svhn/full/seed4/checkpoint.pt", weights_only=True)["trainable"]
    wb = torch.load(tmp_path / "killed/runs/vtab1k/svhn/full/seed4/checkpoint.pt", weights_only=True)["trainable"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ship_hierarchy_is_cached_and_user_files_override(tiny_task_root, tiny_vit_file, tmp_path):
    import numpy as np

    ship = dict(method="ship", epochs=1, options={"prompt_length": 4, "num_prototypes": 8})
    first = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, **ship))
    h = first["hierarchy"]
    assert h["computed"] == ["affinity", "prototypes"] and not h["from_cache"] and h["split"] == "train800val200"
    assert first["config"]["options"]["threshold"] == 0.97  # svhn's official alpha
    assert first["history"][0]["pml"] > 0 and first["history"][0]["loss"] == pytest.approx(
        first["history"][0]["ce"] + 0.5 * first["history"][0]["pml"])
    second = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, seed=4, **ship))
    assert second["hierarchy"]["from_cache"] and second["hierarchy"]["cache"] == h["cache"]
    assert second["hierarchy"]["levels"] == h["levels"]
    # user files (e.g. the official .npy) are used as given: no cache lookup, no feature extraction
    with np.load(h["cache"]) as z:
        np.save(tmp_path / "A.npy", z["affinity"])
        np.save(tmp_path / "P.npy", z["prototypes"])
    user = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, tag="files", method="ship", epochs=1,
                                   options={"prompt_length": 4, "affinity": str(tmp_path / "A.npy"),
                                            "prototypes": str(tmp_path / "P.npy")}))
    assert "computed" not in user["hierarchy"] and "cache" not in user["hierarchy"]
    assert user["hierarchy"]["levels"] == h["levels"] and user["hierarchy"]["level_source"] == "affinity"
    assert user["config"]["options"]["affinity"] == str(tmp_path / "A.npy") and user["sources"]["affinity"] == "user"


def test_mini_benchmark_defaults(tmp_path, monkeypatch):
    """A mini-VTAB task gets the mini backbone at 32 px and the mini table's (tuned) values."""
    from conftest import write_tiny_task

    from shiplib.data import tasks

    spec = tasks.TaskSpec(name="mini_enginetest", benchmark="mini", group="natural", num_classes=3, image_size=32)
    monkeypatch.setitem(tasks._TASKS, spec.name, spec)  # registered for this test only
    monkeypatch.setitem(tasks._ALIASES, spec.name, spec.name)
    write_tiny_task(tmp_path / "data", spec.name)
    r = run_experiment(RunConfig(task=spec.name, method="vpt_deep", seed=0, epochs=1, batch_size=16,
                                 pretrained=False, data_root=str(tmp_path / "data"),
                                 results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"),
                                 progress=False))
    assert (r["benchmark"], r["config"]["backbone"], r["config"]["img_size"]) == ("mini", "mini", 32)
    assert r["config"]["lr"] == 0.1 and r["config"]["options"]["num_prompts"] == 10
    assert "mini_defaults.csv [vpt_deep,*] (tuned)" in r["sources"]["lr"]
    assert r["config"]["cache_images"] is True and r["backbone"]["depth"] == 12
    assert (tmp_path / "results/mini/mini_enginetest/vpt_deep/seed0.json").is_file()


def test_result_made_with_replaced_backbone_weights_is_out_of_date(tiny_task_root, tiny_vit_file, tmp_path):
    """Same identity, new weights in the backbone file: the old result is neither returned nor skipped by sweeps."""
    import shutil

    from safetensors.torch import load_file, save_file

    from shiplib.engine import resolve_config
    from shiplib.engine.results import is_finished
    from shiplib.engine.run import paths_for

    vit_file = tmp_path / "vit" / tiny_vit_file.name
    vit_file.parent.mkdir()
    shutil.copy(tiny_vit_file, vit_file)
    shutil.copy(tiny_vit_file.with_suffix(".json"), vit_file.with_suffix(".json"))
    cfg = tiny_cfg(tiny_task_root, vit_file, tmp_path, method="linear", epochs=1)
    first = run_experiment(cfg)
    path = paths_for(resolve_config(cfg)).result
    assert is_finished(path, first["identity"]) and run_experiment(cfg) == first

    sd = load_file(str(vit_file))
    sd["cls_token"] = sd["cls_token"] + 1.0
    save_file(sd, str(vit_file))
    assert not is_finished(path, first["identity"])
    with pytest.raises(ConfigError, match=r"out of date: it was made with other .* backbone weights .*--force"):
        run_experiment(cfg)
    again = run_experiment(cfg, force=True)
    assert again["backbone"]["sha256"] != first["backbone"]["sha256"] and is_finished(path, again["identity"])
