"""Short runs can reach their learning rate: a default warm-up as long as the run is scaled down with it (and the
run says so), a user's impossible warm-up or a floor above the lr is refused in one line."""
import pytest

from shiplib.engine import RunConfig, resolve_config
from shiplib.errors import ConfigError


@pytest.mark.parametrize("epochs, want", [(1, 0), (2, 0), (5, 2), (10, 2)])
def test_default_warmup_scales_down_with_a_short_run(epochs, want):
    run = resolve_config(RunConfig(task="mini_mnist", method="ship", epochs=epochs))
    assert run.training.warmup_epochs == want
    assert run.training.warmup_epochs < epochs
    if epochs <= 2:
        assert run.sources["warmup_epochs"].startswith(f"scaled to {want} for epochs={epochs}")


def test_user_warmup_not_shorter_than_the_run_is_refused():
    with pytest.raises(ConfigError, match=r"warmup_epochs=3 is not shorter than epochs=3.*warmup_epochs below 3"):
        resolve_config(RunConfig(task="mini_mnist", method="ship", epochs=3, warmup_epochs=3))


@pytest.mark.parametrize("name", ["min_lr", "warmup_lr"])
def test_a_floor_above_the_lr_is_refused(name):
    with pytest.raises(ConfigError, match=rf"{name}=0.5 is above lr=0.1"):
        resolve_config(RunConfig(task="mini_mnist", method="ship", lr=0.1, **{name: 0.5}))


def test_vtab_defaults_are_untouched():
    run = resolve_config(RunConfig(task="svhn", method="ship"))
    assert (run.training.epochs, run.training.warmup_epochs, run.training.lr_schedule) == (100, 10, "epoch")


def test_scaled_schedule_is_part_of_the_identity():
    a = resolve_config(RunConfig(task="mini_mnist", method="ship")).identity()
    b = resolve_config(RunConfig(task="mini_mnist", method="ship", lr_schedule="scaled")).identity()
    assert a["lr_schedule"] == "epoch" and b["lr_schedule"] == "scaled"


@pytest.mark.slow
def test_a_two_epoch_mini_run_learns(tmp_path):
    """What a newcomer tries first (`papermill notebooks/vtab.ipynb out.ipynb -p epochs 2`) learns: 37 % here,
    chance is 10 %."""
    from shiplib.engine import run_experiment

    r = run_experiment(RunConfig(task="mini_mnist", method="ship", epochs=2, threads=1, progress=False,
                                 results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs")))
    assert r["sources"]["warmup_epochs"].startswith("scaled to 0")
    assert r["acc_last"] > 25.0
