"""pretrain_mini on a slice of Fashion-MNIST: card contents, stop/resume equals one uninterrupted run, config guard."""
from dataclasses import asdict
import json

import pytest
import torch
from safetensors.torch import load_file

from shiplib.backbones.pretrain_mini import PretrainConfig, fmnist_tensors, pretrain_mini
from shiplib.errors import StateError

SUBSET = (256, 128)


@pytest.fixture(scope="module", autouse=True)
def fashion_mnist():
    try:
        fmnist_tensors("test")
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")


def tiny(tmp_path, name, **kw):
    cfg = PretrainConfig(epochs=2, batch_size=32, warmup_epochs=0.5, threads=1)
    return pretrain_mini(cfg, work_dir=tmp_path / name, checkpoint_path=tmp_path / f"{name}.safetensors",
                         card_path=tmp_path / f"{name}.json", subset=SUBSET, **kw)


def untimed(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = tiny(tmp_path, "whole")
    assert whole["complete"] and whole["epochs_completed"] == 2 and len(whole["history"]) == 2
    assert (whole["data"]["train_images"], whole["data"]["test_images"]) == SUBSET
    assert whole["test_accuracy"] == round(whole["history"][-1]["test_acc"], 2)
    assert json.loads((tmp_path / "whole.json").read_text()) == whole

    part = tiny(tmp_path, "split", stop_after=1)
    assert not part["complete"] and part["epochs_completed"] == 1  # interim card says so
    resumed = tiny(tmp_path, "split")
    assert untimed(resumed["history"]) == untimed(whole["history"])
    a, b = load_file(str(tmp_path / "whole.safetensors")), load_file(str(tmp_path / "split.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["sha256"] == whole["sha256"]


def test_resuming_with_another_config_or_subset_fails(tmp_path):
    tiny(tmp_path, "run", stop_after=1)
    other = PretrainConfig(epochs=2, batch_size=32, warmup_epochs=0.5, lr=1e-4)
    with pytest.raises(ValueError, match="another recipe.*delete"):
        pretrain_mini(other, work_dir=tmp_path / "run", checkpoint_path=tmp_path / "x.safetensors",
                      card_path=tmp_path / "x.json", subset=SUBSET)
    with pytest.raises(ValueError, match="another recipe"):
        tiny_cfg = PretrainConfig(epochs=2, batch_size=32, warmup_epochs=0.5, threads=1)
        pretrain_mini(tiny_cfg, work_dir=tmp_path / "run", checkpoint_path=tmp_path / "x.safetensors",
                      card_path=tmp_path / "x.json", subset=(128, 128))


def test_stop_after_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="stop_after"):
        tiny(tmp_path, "bad", stop_after=0)


def test_card_records_the_recipe(tmp_path):
    card = tiny(tmp_path, "recipe", stop_after=1)
    cfg = PretrainConfig(epochs=2, batch_size=32, warmup_epochs=0.5, threads=1)
    assert {k: card["training"][k] for k in asdict(cfg)} == asdict(cfg)
    assert card["data"]["preprocessing"].endswith(f"train augmentation: {cfg.augment}")


def test_the_state_loads_safely_and_the_log_mirrors_it(tmp_path):
    tiny(tmp_path, "state", stop_after=1)
    state = torch.load(tmp_path / "state" / "last.pt", weights_only=True)  # no pickled code needed
    assert state["epoch"] == 0 and state["config"]["epochs"] == 2 and isinstance(state["history"][0]["lr"], float)
    tiny(tmp_path, "state")
    log = [json.loads(line) for line in (tmp_path / "state" / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == [0, 1]  # the resumed session did not append epoch 0 again


def test_an_unreadable_state_fails_naming_it(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(StateError, match=r"cannot read the pretraining state .*last\.pt.*Delete it"):
        tiny(tmp_path, "bad")
