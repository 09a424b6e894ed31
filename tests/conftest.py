"""Shared fixtures. Tests that need ../shared/reference skip with a reason where it is absent (a user's clone)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

# submitit configures logging when imported (logging.config.dictConfig), which closes every handler that exists
# by then: absl's handler, made when tensorflow_datasets was imported under pytest, holds pytest's capture stream,
# and closing it ends the test session with "I/O operation on closed file". The tests do not need submitit's
# console logging.
os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")

REFERENCE_CANDIDATES = [
    os.environ.get("SHIPLIB_REFERENCE"),
    str(Path(__file__).resolve().parents[1].parent / "shared" / "reference"),
    "/work/shared/reference",
]


def find_reference_dir() -> Path | None:
    for c in REFERENCE_CANDIDATES:
        if c and (Path(c) / "ship_spec.md").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    d = find_reference_dir()
    if d is None:
        pytest.skip("../shared/reference is absent (a user's clone); set SHIPLIB_REFERENCE to run reference tests")
    return d


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; tiny models are faster single-threaded and deterministic.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


# ----- engine/CLI fixtures: a tiny task folder in the shared layout and a tiny ViT backbone file -----
def write_tiny_task(root: Path, task: str = "svhn", classes: int = 3, sizes: dict | None = None,
                    size: int = 32, seed: int = 0) -> Path:
    """A learnable toy task as PNGs in the NOAH/SHIP folder layout (48/16/24 images unless `sizes` says)."""
    from shiplib.data.synthetic import write_synthetic_task

    return write_synthetic_task(root, task, classes, sizes or dict(train800=48, val200=16, test=24), size, seed)


@pytest.fixture(scope="session")
def tiny_task_root(tmp_path_factory) -> Path:
    """Data root holding a toy `svhn/` folder (3 of its 10 labels used; 48/16/24 images, 32 px)."""
    root = tmp_path_factory.mktemp("tiny_data")
    write_tiny_task(root, "svhn")
    return root


@pytest.fixture(scope="session")
def tiny_vit_file(tmp_path_factory) -> Path:
    """A random 4-block, width-32 ViT (32 px, patch 8) saved as .safetensors with its architecture card."""
    import json

    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    arch = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0, qkv_bias=True)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    vit = VisionTransformer(num_classes=0, **arch)
    torch.random.set_rng_state(gen_state)
    path = tmp_path_factory.mktemp("tiny_vit") / "tiny_vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"architecture": arch}))
    return path


# ----- report fixtures: result files in the engine's format without training -----
def fake_result(task: str, method: str, seed: int, acc_last: float, acc_max: float | None = None,
                tag: str | None = None, protocol: str = "final", trainable: int = 1000, epochs: int = 3,
                losses=None, options: dict | None = None, levels=None) -> dict:
    """A result dict with the fields `run_experiment` writes that the readers use (accuracies in %)."""
    from shiplib.data import get_task

    spec = get_task(task)
    losses = list(losses) if losses is not None else [2.0 - 0.5 * e for e in range(epochs)]
    history = [dict(epoch=e, loss=losses[e], ce=losses[e] * 0.9, lr=1e-3, train_acc=50.0 + e, steps=2,
                    eval_acc=acc_last if e == epochs - 1 else acc_last - 1.0, eval_loss=1.0)
               for e in range(epochs)]
    acc_max = acc_last if acc_max is None else acc_max
    return dict(task=task, benchmark=spec.benchmark, group=spec.group, method=method, tag=tag, seed=seed,
                protocol=protocol, train_split="train800val200", eval_split="test", acc_last=acc_last,
                acc_max_over_epochs=acc_max, max_epoch=epochs - 1, last_epoch=epochs - 1, epochs=epochs,
                config=dict(lr=1e-3, weight_decay=1e-4, backbone="mini", img_size=32, batch_size=64,
                            options=options or {}),
                parameters=dict(trainable=trainable, trainable_without_head=trainable - 10, head=10,
                                frozen=5000, total=5000 + trainable),
                history=history, wall_time_s=1.0, device="cpu", identity={},
                **({} if levels is None else {"hierarchy": dict(levels=list(levels))}))


@pytest.fixture
def write_fake_result(tmp_path):
    """write_fake_result(task, method, seed, acc_last, ...) -> path under tmp_path/results (engine layout)."""
    from shiplib.engine.results import result_path, run_name, write_result

    def write(*args, results_dir=None, **kw):
        r = fake_result(*args, **kw)
        root = results_dir or tmp_path / "results"
        return write_result(result_path(root, r["benchmark"], r["task"], run_name(r["method"], r["tag"]), r["seed"],
                                        r["protocol"]), r)

    return write


# ----- the notebook session (strict nbval of notebooks/) -----
# Strict nbval runs each notebook as a fresh clone would: `vtab.ipynb` trains into `runs/notebook/`, and a result left
# there by an earlier run (of the tests, or the user's own) would be reused, so the committed output (a training run)
# would differ. The folder is moved aside for the test session and put back after it, with the user's files as they
# were; a session that crashed before putting it back is repaired by the next one. (Here, not in notebooks/: a second
# module named `conftest` would shadow this one for the tests that import their helpers from it.)
NOTEBOOK_RUNS = Path(__file__).resolve().parents[1] / "runs" / "notebook"
ASIDE = NOTEBOOK_RUNS.with_name(NOTEBOOK_RUNS.name + ".kept-during-tests")
_ISOLATED = pytest.StashKey[bool]()


def _restore() -> None:
    """The user's folder back in place; what the session wrote there is dropped."""
    if ASIDE.exists():
        shutil.rmtree(NOTEBOOK_RUNS, ignore_errors=True)
        ASIDE.rename(NOTEBOOK_RUNS)


def pytest_sessionstart(session) -> None:
    _restore()  # left by a session that crashed


def pytest_collection_finish(session) -> None:
    """Only a session that runs notebooks touches the folder."""
    if any(str(getattr(item, "path", "")).endswith(".ipynb") for item in session.items):
        session.config.stash[_ISOLATED] = True
        if NOTEBOOK_RUNS.exists():
            NOTEBOOK_RUNS.rename(ASIDE)


def pytest_sessionfinish(session, exitstatus) -> None:
    if not session.config.stash.get(_ISOLATED, False):
        return
    if ASIDE.exists():
        _restore()
    else:  # nothing of the user's: the session's own files go
        shutil.rmtree(NOTEBOOK_RUNS, ignore_errors=True)
