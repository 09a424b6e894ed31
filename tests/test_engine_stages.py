"""The stages of a run one by one: the typed ResolvedRun, validate-before-work, reuse-or-refuse, the checkpoint
store (corrupt files, the previous checkpoint), the log, the hierarchy cache key, the recorded data root."""
import ast
import dataclasses
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch

from shiplib.engine import RunConfig, read_result, resolve_config, run_experiment
from shiplib.engine.checkpoints import CheckpointStore, checkpoint_state
from shiplib.engine.config import ConfigError
from shiplib.engine.prepare import dataset_fingerprint, images_fingerprint
from shiplib.engine.results import result_path
from shiplib.engine.run import reuse_or_refuse
from shiplib.engine.validate import validate_before_work
from shiplib.methods import list_methods

from _engine_helpers import Interrupt, crash_at, tiny_cfg, untimed

REPO = Path(__file__).resolve().parents[1]


# ----- ResolvedRun -----
def test_resolved_run_is_frozen_typed_and_gives_the_committed_identity():
    run = resolve_config(RunConfig(task="mini_mnist", method="linear", seed=1))
    committed = read_result(result_path(REPO / "results", "mini", "mini_mnist", "linear", 1))
    assert run.identity() == committed["identity"]
    assert list(run.identity()) == list(committed["identity"])  # same key order as the files
    assert (run.training.epochs, run.model.backbone, run.runtime.cache_images) == (10, "mini", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 2
    with pytest.raises(TypeError):
        run.options["drop_path_rate"] = 0.5  # read-only mapping
    assert pickle.loads(pickle.dumps(run)) == run
    record = run.as_record(data_root=REPO / "data" / "mini-vtab")
    assert set(committed["config"]) == set(record) and record["data_root"] == "data/mini-vtab"
    assert {k: record[k] for k in run.identity()} == run.identity()
    assert run.paths.result == Path("results/mini/mini_mnist/linear/seed1.json")
    assert run.paths.previous_checkpoint.parent == run.paths.checkpoint.parent == run.paths.work_dir


def test_identity_covers_every_run_field():
    run = resolve_config(RunConfig(task="svhn", method="linear", precision="bf16"))  # fp32 is left out (the default)
    settings = {f.name for f in dataclasses.fields(RunConfig)} - set(RunConfig.RUNTIME_FIELDS)
    always = settings - set(RunConfig.IDENTITY_WHEN_SET)
    assert set(run.identity()) == always | {"benchmark", "train_split", "eval_split", "eval_epochs"}
    given = resolve_config(RunConfig(task="svhn", method="linear", backbone_arch={"num_heads": 3})).identity()
    assert set(given) - set(run.identity()) == set(RunConfig.IDENTITY_WHEN_SET)


# ----- validate before work -----
def test_a_bad_method_option_fails_first_naming_it(tiny_task_root, tiny_vit_file, tmp_path, monkeypatch):
    import shiplib.engine.run as run_module

    def no_build(*a, **k):
        raise AssertionError("built although the options are invalid")

    monkeypatch.setattr(run_module, "build", no_build)
    bad = tiny_cfg(tmp_path / "no_data", tiny_vit_file, tmp_path, method="ship", options={"threshold": "abc"})
    with pytest.raises(ConfigError, match=r"invalid option for method 'ship': .*threshold.*'abc'.*--set"):
        run_experiment(bad)  # before the missing data folder, before building anything
    # a result of another configuration exists: the option error still comes first
    r = result_path(tmp_path / "results", "vtab1k", "svhn", "ship", 3)
    r.parent.mkdir(parents=True)
    r.write_text(json.dumps(dict(schema=1, identity={"lr": 1}, task="svhn", method="ship", seed=3, acc_last=1.0,
                                 acc_max_over_epochs=1.0)))
    with pytest.raises(ConfigError, match="invalid option"):
        run_experiment(dataclasses.replace(bad, data_root=str(tiny_task_root)))
    with pytest.raises(ConfigError, match="another configuration"):
        run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="ship"))


def test_folders_that_cannot_be_written_fail_before_work(tiny_task_root, tiny_vit_file, tmp_path):
    (tmp_path / "afile").write_text("x")
    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear",
                   results_dir=str(tmp_path / "afile" / "results"))
    with pytest.raises(ConfigError, match=r"results folder .* is a file, not a folder.*--results"):
        validate_before_work(resolve_config(cfg))
    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, runs_dir=str(tmp_path / "afile"), method="linear")
    with pytest.raises(ConfigError, match=r"runs folder .*--runs"):
        validate_before_work(resolve_config(cfg))
    with pytest.raises(FileNotFoundError, match="task 'svhn' not found"):
        validate_before_work(resolve_config(tiny_cfg(tmp_path / "empty", tiny_vit_file, tmp_path, method="linear")))
    location = validate_before_work(resolve_config(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear")))
    assert location.task_dir == tiny_task_root / "svhn" and location.source == "root argument"
    assert not (tmp_path / "results").exists()  # checking creates nothing


def test_a_broken_split_list_fails_before_work(tmp_path, tiny_vit_file):
    from conftest import write_tiny_task

    task_dir = write_tiny_task(tmp_path / "data", "svhn")
    (task_dir / "test.txt").write_text("images/test/000000.png 99\n")
    with pytest.raises(ValueError, match="label 99 is out of range"):
        validate_before_work(resolve_config(tiny_cfg(tmp_path / "data", tiny_vit_file, tmp_path, method="linear")))


# ----- reuse or refuse -----
def test_reuse_or_refuse_alone(tiny_task_root, tiny_vit_file, tmp_path):
    run = resolve_config(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear"))
    assert reuse_or_refuse(run) is None  # nothing there
    run.paths.result.parent.mkdir(parents=True)
    run.paths.result.write_text('{"identity": {"trunc')
    assert reuse_or_refuse(run) is None  # unreadable: moved aside, trained again
    assert run.paths.result.with_name("seed3.json.corrupt").is_file() and not run.paths.result.exists()
    same = dict(schema=1, identity=run.identity(), task="svhn", method="linear", seed=3, acc_last=1.0,
                acc_max_over_epochs=2.0)
    run.paths.result.write_text(json.dumps(same))
    assert reuse_or_refuse(run) == same and reuse_or_refuse(run, force=True) is None
    run.paths.result.write_text(json.dumps({**same, "identity": {**same["identity"], "lr": 9.0}}))
    with pytest.raises(ConfigError, match=r"another configuration \(lr: 9\.0 -> "):
        reuse_or_refuse(run)


# ----- build, resume, fit, record by hand -----
def test_the_stages_run_one_by_one(tiny_task_root, tiny_vit_file, tmp_path):
    from shiplib.engine.run import build, fit, record, resume

    run = resolve_config(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, epochs=2, method="linear"))
    built = build(run, validate_before_work(run))
    assert (len(built.train_set), len(built.eval_set), built.hierarchy) == (64, 24, None)
    assert built.optimizer.param_groups[0]["lr"] == run.training.lr and built.model.training
    progress = resume(run, built)
    assert (progress.start_epoch, progress.history) == (0, [])
    fit(run, built, progress)
    assert [h["epoch"] for h in progress.history] == [0, 1]
    assert torch.load(run.paths.checkpoint, weights_only=True)["epoch"] == 1
    result = record(run, built, progress)
    assert result["identity"] == run.identity() and result["config"]["data_root"] == str(tiny_task_root)
    assert not run.paths.result.exists()  # recording makes the dict; run_experiment writes it
    again = resume(run, build(run, validate_before_work(run)))  # a new process would resume after epoch 1
    assert (again.start_epoch, again.resumed_from, again.history) == (2, 1, progress.history)


# ----- checkpoints -----
def _state(epoch, ident=None):
    return checkpoint_state(dict(trainable={"w": torch.ones(2)}, optimizer={}), identity=ident or {"a": 1},
                            fingerprint="f", epoch=epoch, history=[{"epoch": e} for e in range(epoch + 1)], elapsed=1.0)


@pytest.mark.parametrize("damage", ["truncate", "text", "wrong_keys"])
def test_store_falls_back_to_the_previous_checkpoint(tmp_path, caplog, damage):
    store = CheckpointStore(tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt")
    store.save(_state(0))
    store.save(_state(1))
    assert torch.load(store.previous, weights_only=True)["epoch"] == 0
    if damage == "truncate":
        data = store.newest.read_bytes()
        store.newest.write_bytes(data[: len(data) // 3])
    elif damage == "text":
        store.newest.write_text("not a checkpoint")
    else:
        torch.save({"epoch": 1, "model": {}}, store.newest)
    with caplog.at_level(logging.WARNING):
        state, where = store.load({"a": 1}, "f")
    assert (state["epoch"], where) == (0, store.previous)
    assert (tmp_path / "checkpoint.pt.corrupt").is_file() and not store.newest.exists()
    assert "checkpoint.pt" in caplog.text and "moved it aside to checkpoint.pt.corrupt" in caplog.text
    store.previous.write_bytes(b"\x00" * 10)
    assert store.load({"a": 1}, "f") is None  # nothing usable: from scratch
    assert (tmp_path / "checkpoint.prev.pt.corrupt").is_file()


def test_store_refuses_another_configuration(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt")
    store.save(_state(0, ident={"lr": 1}))
    with pytest.raises(ConfigError, match=r"another configuration \(lr: 1 -> 2\).*--fresh"):
        store.load({"lr": 2}, "f")


def test_a_corrupt_newest_checkpoint_costs_one_epoch_and_the_result_is_unchanged(tiny_task_root, tiny_vit_file,
                                                                                 tmp_path):
    opts = dict(method="full", options={"drop_path_rate": 0.1}, lr=1e-3, epochs=4)
    ref = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "a", **opts))
    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "b", **opts)
    with pytest.raises(Interrupt):
        run_experiment(cfg, on_step=crash_at(2))
    work = tmp_path / "b/runs/vtab1k/svhn/full/seed3"
    assert torch.load(work / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert torch.load(work / "checkpoint.prev.pt", weights_only=True)["epoch"] == 0
    (work / "checkpoint.pt").write_bytes((work / "checkpoint.pt").read_bytes()[:200])  # truncated
    resumed = run_experiment(cfg)
    assert resumed["resumed_from_epoch"] == 0 and (work / "checkpoint.pt.corrupt").is_file()
    assert untimed(resumed["history"]) == untimed(ref["history"]) and resumed["acc_last"] == ref["acc_last"]
    assert [json.loads(x) for x in open(work / "log.jsonl")] == resumed["history"]


def test_the_log_never_holds_an_epoch_twice(tiny_task_root, tiny_vit_file, tmp_path):
    """A second run of the same cell that finishes while the first is still training (as two processes started
    at once would): the log mirrors the history of the run that wrote last, each epoch once."""
    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, epochs=3, method="linear")
    other = {}

    def concurrent(epoch, step):
        if (epoch, step) == (1, 0) and not other:
            other["result"] = run_experiment(cfg)

    first = run_experiment(cfg, force=True, on_step=concurrent)
    log = [json.loads(x) for x in open(tmp_path / "runs/vtab1k/svhn/linear/seed3/log.jsonl")]
    assert [h["epoch"] for h in log] == [0, 1, 2] and log == first["history"]
    assert [h["epoch"] for h in other["result"]["history"]] == [0, 1, 2]


def test_fresh_start_discards_older_checkpoints(tiny_task_root, tiny_vit_file, tmp_path):
    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, epochs=3, method="linear")
    with pytest.raises(Interrupt):
        run_experiment(cfg, on_step=crash_at(2))
    work = tmp_path / "runs/vtab1k/svhn/linear/seed3"
    assert (work / "checkpoint.prev.pt").is_file()
    with pytest.raises(Interrupt):
        run_experiment(dataclasses.replace(cfg, resume=False), on_step=crash_at(1))
    assert torch.load(work / "checkpoint.pt", weights_only=True)["epoch"] == 0
    assert not (work / "checkpoint.prev.pt").exists()


# ----- hierarchy cache and data root -----
def test_images_fingerprint_follows_the_files(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"12")
    b.write_bytes(b"34")
    first = images_fingerprint([a, b])
    assert images_fingerprint([b, a]) != first  # order matters (k-means sees the features in list order)
    b.write_bytes(b"345")
    assert images_fingerprint([a, b]) != first


def test_hierarchy_cache_is_keyed_on_the_training_images(tmp_path, tiny_vit_file):
    import numpy as np
    from PIL import Image

    from conftest import write_tiny_task

    task_dir = write_tiny_task(tmp_path / "data", "svhn")
    ship = dict(method="ship", epochs=1, options={"prompt_length": 4, "num_prototypes": 8})
    first = run_experiment(tiny_cfg(tmp_path / "data", tiny_vit_file, tmp_path, **ship))
    assert not first["hierarchy"]["from_cache"]
    for i in range(0, 48, 2):  # new images at the same paths
        Image.fromarray(np.full((32, 32, 3), 7 * i % 255, np.uint8)).save(task_dir / f"images/train800/{i:06d}.png")
    second = run_experiment(tiny_cfg(tmp_path / "data", tiny_vit_file, tmp_path, seed=4, **ship))
    assert not second["hierarchy"]["from_cache"] and second["hierarchy"]["cache"] != first["hierarchy"]["cache"]
    third = run_experiment(tiny_cfg(tmp_path / "data", tiny_vit_file, tmp_path, seed=5, **ship))
    assert third["hierarchy"]["from_cache"] and third["hierarchy"]["cache"] == second["hierarchy"]["cache"]
    with np.load(second["hierarchy"]["cache"]) as new, np.load(first["hierarchy"]["cache"]) as old:
        assert not np.array_equal(new["prototypes"], old["prototypes"])


def test_dataset_fingerprint_uses_the_listed_images(tiny_task_root):
    from shiplib.data import build_dataset

    ds = build_dataset("svhn", "train800", root=tiny_task_root, img_size=32)
    assert dataset_fingerprint(ds) == images_fingerprint(p for p, _ in ds.samples)
    assert dataset_fingerprint(ds) != dataset_fingerprint(build_dataset("svhn", "val200", root=tiny_task_root,
                                                                        img_size=32))


def test_every_result_records_the_data_root_it_read(tiny_task_root, tiny_vit_file, tmp_path, monkeypatch):
    from shiplib.utils.paths import portable_path

    monkeypatch.setenv("SHIPLIB_DATA", str(tiny_task_root))
    r = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, epochs=1, data_root=None, method="linear"))
    assert r["config"]["data_root"] == portable_path(tiny_task_root)


# ----- no method names in the engine -----
def test_the_engine_names_no_method():
    names = set(list_methods())
    found = []
    for file in sorted((REPO / "shiplib" / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{file.name}:{node.lineno} {node.value!r}")
    assert not found, f"method names in the engine: {found}"
