"""Helpers shared by the engine tests: a tiny run config, histories without timings, an interrupting step hook."""
from shiplib.engine import RunConfig

TIMING_KEYS = {"seconds", "train_seconds", "eval_seconds"}


def tiny_cfg(root, vit_file, tmp_path, method="full", **kw):
    base = dict(task="svhn", method=method, seed=3, epochs=3, batch_size=16, eval_every=1, backbone=str(vit_file),
                img_size=32, data_root=str(root), results_dir=str(tmp_path / "results"),
                runs_dir=str(tmp_path / "runs"), progress=False)
    return RunConfig(**{**base, **kw})


def untimed(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


class Interrupt(Exception):
    pass


def crash_at(epoch_to_crash):
    """An `on_step` hook that interrupts the run in the given epoch."""
    def on_step(epoch, step):
        if epoch == epoch_to_crash:
            raise Interrupt

    return on_step
