"""Hostile and careless inputs, one table row each: what a user types or leaves on disk, and what must happen.

Every case asserts the exit code, that the message names the culprit, that no traceback is printed, and what is
left on disk (by default: a refused command adds, removes and changes no file). Runs are 1-epoch runs of the
`linear` method on a toy task with a tiny ViT (see conftest), in-process through `main()`; a few cases go through
`python -m …` subprocesses, where the real entry point matters (no traceback on stderr, environment variables).
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from shiplib.__main__ import main as shiplib_main
from shiplib.data.__main__ import main as data_main

TRACEBACK = "Traceback (most recent call last)"
REPO = Path(__file__).resolve().parents[1]
RESULT = "results/vtab1k/svhn/linear/seed1.json"
WORK = "runs/vtab1k/svhn/linear/seed1"


# ----- the context of one case: a private copy of the toy data, results and runs folders -----
@dataclass
class Ctx:
    root: Path
    vit: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, *extra: str, method: str = "linear", task: str = "svhn", data: bool = True) -> list[str]:
        """argv of a 1-epoch toy run (`extra` last, so it can repeat or override an option)."""
        return ["run", "--task", task, "--method", method, *self.common(data), *extra]

    def sweep(self, *extra: str, methods=("linear",), tasks=("svhn",), seeds="1") -> list[str]:
        return ["sweep", "--tasks", *tasks, "--methods", *methods, "--seeds", seeds, *self.common(), *extra]

    def status(self, *extra: str, methods=("linear",), tasks=("svhn",), seeds="1") -> list[str]:
        return ["status", "--tasks", *tasks, "--methods", *methods, "--seeds", seeds, *self.common(), *extra]

    def common(self, data: bool = True) -> list[str]:
        return ["--epochs", "1", "--set", f"backbone={self.vit}", "--set", "img_size=32", "--set", "batch_size=16",
                *(["--data-root", str(self.data)] if data else []), "--results", str(self.results),
                "--runs", str(self.runs), "--device", "cpu", "--threads", "1", "--no-progress"]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def files(self) -> dict[str, bytes]:
        """Every file under results/ and runs/ with its content (what a refused command must leave alone)."""
        out = {}
        for top in (self.results, self.runs):
            if top.is_dir():
                for p in sorted(top.rglob("*")):
                    if p.is_file():
                        out[str(p.relative_to(self.root))] = p.read_bytes()
        return out


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    rc: int  # expected exit code
    names: tuple[str, ...] = ()  # each must appear in the output: the culprit, its value, the fix
    setup: Callable[[Ctx], None] | None = None
    disk: Callable[[Ctx, dict], None] | None = None  # what is left on disk (default for rc != 0: nothing changed)
    env: dict = field(default_factory=dict)  # environment variables ("{root}" is replaced by the case folder)
    tool: str = "shiplib"  # or "data" (python -m shiplib.data)
    subprocess: bool = False
    not_named: tuple[str, ...] = ()  # must NOT appear (e.g. an error that would hide the real one)


def _invoke_in_process(case: Case, ctx: Ctx, capsys, caplog, monkeypatch) -> tuple[int, str]:
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.replace("{root}", str(ctx.root)))
    entry = shiplib_main if case.tool == "shiplib" else data_main
    caplog.set_level(logging.INFO)
    try:
        rc = entry(case.argv(ctx))
    except SystemExit as e:  # argparse usage errors
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 (an escaped exception is the raw traceback a user would see)
        pytest.fail(f"raw traceback: {type(e).__name__}: {e}")
    out = capsys.readouterr()
    return rc, out.out + out.err + caplog.text


def _invoke_subprocess(case: Case, ctx: Ctx) -> tuple[int, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", SHIPLIB_HOME=str(REPO),  # run from the case folder,
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))  # this code
    env.update({k: v.replace("{root}", str(ctx.root)) for k, v in case.env.items()})
    module = "shiplib" if case.tool == "shiplib" else "shiplib.data"
    proc = subprocess.run([sys.executable, "-m", module, *case.argv(ctx)], capture_output=True, text=True,
                          cwd=ctx.root, env=env, timeout=300)
    assert TRACEBACK not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout + proc.stderr


# ----- setups: what a careless user or a crash leaves behind -----
def write(rel: str, content: str | bytes) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        p = ctx.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def truncate(rel: str, size: int) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        with open(ctx.path(rel), "r+b") as f:
            f.truncate(size)

    return setup


def steps(*setups) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        for s in setups:
            s(ctx)

    return setup


def finished(*extra: str, method: str = "linear") -> Callable[[Ctx], None]:
    """A finished toy run (made in-process; a setup, not part of the case)."""
    def setup(ctx: Ctx) -> None:
        assert shiplib_main(ctx.run(*extra, method=method)) == 0

    return setup


def edit_result(**changes) -> Callable[[Ctx], None]:
    """A finished toy run whose result file then gets `changes` (impossible values a reader must refuse)."""
    def setup(ctx: Ctx) -> None:
        finished()(ctx)
        p = ctx.path(RESULT)
        r = json.loads(p.read_text())
        for key, value in changes.items():
            r[key] = value(r) if callable(value) else value
        p.write_text(json.dumps(r))

    return setup


def check(ctx: Ctx) -> list[str]:
    return ["check", "--task", "svhn", "--root", str(ctx.data)]


def copy_list(source: str, target: str) -> Callable[[Ctx], None]:
    """`<target>.txt` listing the images of `<source>.txt` (an evaluation split made of training images)."""
    return lambda ctx: shutil.copy(ctx.data / "svhn" / f"{source}.txt", ctx.data / "svhn" / f"{target}.txt")


def copy_images(source: str, target: str, n: int) -> Callable[[Ctx], None]:
    """The first `n` images of `target` replaced by byte copies of training images (other names, same content)."""
    def setup(ctx: Ctx) -> None:
        for i in range(n):
            shutil.copy(ctx.data / f"svhn/images/{source}/{i:06d}.png", ctx.data / f"svhn/images/{target}/{i:06d}.png")

    return setup


def bom(split: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        p = ctx.data / "svhn" / f"{split}.txt"
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())

    return setup


def symlink(split: str, index: int, target: str) -> Callable[[Ctx], None]:
    """Image `index` of `split` replaced by a symbolic link to `target` (itself: a loop)."""
    def setup(ctx: Ctx) -> None:
        p = ctx.data / f"svhn/images/{split}/{index:06d}.png"
        p.unlink()
        p.symlink_to(target)

    return setup


def sixteen_bit(split: str) -> Callable[[Ctx], None]:
    """Every image of `split` re-saved as a 16-bit grayscale PNG."""
    from PIL import Image

    def setup(ctx: Ctx) -> None:
        for p in (ctx.data / "svhn/images" / split).glob("*.png"):
            gray = np.asarray(Image.open(p).convert("L"), dtype=np.uint16) * 257
            Image.fromarray(gray).save(p)

    return setup


def bare_vit(ctx: Ctx) -> None:
    """The toy backbone copied without its card (a file that does not say its head count)."""
    shutil.copy(ctx.vit, ctx.root / "bare.safetensors")


def nan_vit(ctx: Ctx) -> None:
    """The toy backbone (with its card) with one NaN weight: a damaged download."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(ctx.vit))
    sd["blocks.1.attn.qkv.weight"][0, 0] = float("nan")
    save_file(sd, str(ctx.root / "nan.safetensors"))
    shutil.copy(ctx.vit.with_suffix(".json"), ctx.root / "nan.json")


def recorded_heads(heads: int) -> Callable[[Ctx, dict], None]:
    def check(ctx: Ctx, before: dict) -> None:
        arch = json.loads(ctx.path(RESULT).read_text())["backbone"]["architecture"]
        assert arch["num_heads"] == heads and arch["embed_dim"] == 32 and arch["depth"] == 4

    return check


def edit_list(split: str, line: int, text: str) -> Callable[[Ctx], None]:
    """Replace line `line` (1-based) of the toy task's `<split>.txt`."""
    def setup(ctx: Ctx) -> None:
        p = ctx.data / "svhn" / f"{split}.txt"
        lines = p.read_text().splitlines()
        lines[line - 1] = text
        p.write_text("\n".join(lines) + "\n")

    return setup


def corrupt_image(split: str, index: int, size: int = 60) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        truncate(f"data/svhn/images/{split}/{index:06d}.png", size)(ctx)

    return setup


# ----- what is left on disk -----
def unchanged(ctx: Ctx, before: dict) -> None:
    after = ctx.files()
    assert after.keys() == before.keys(), f"files added/removed: {sorted(after.keys() ^ before.keys())}"
    assert all(after[k] == before[k] for k in before), "a file changed"


def has_result(rel: str = RESULT, aside: tuple[str, ...] = ()) -> Callable[[Ctx, dict], None]:
    def check(ctx: Ctx, before: dict) -> None:
        r = json.loads(ctx.path(rel).read_text())
        assert r["epochs"] == 1 and math.isfinite(r["acc_last"])
        for name in aside:
            assert ctx.path(name).is_file(), f"{name} was not kept"
            if name in before:
                assert ctx.path(name).read_bytes() == before[name], f"{name} was overwritten"

    return check


def kept_aside(original: str, aside: str) -> Callable[[Ctx, dict], None]:
    """The unreadable file is kept, byte for byte, under its .corrupt name; a new result replaced it."""
    def check(ctx: Ctx, before: dict) -> None:
        assert ctx.path(aside).read_bytes() == before[original]
        has_result(original)(ctx, before)

    return check


def no_result(ctx: Ctx, before: dict) -> None:
    """No result and no checkpoint (the folders may not even exist)."""
    assert not list(ctx.results.glob("**/seed*.json")) and not list(ctx.runs.glob("**/checkpoint*.pt"))


def no_result_but_finite_checkpoints(ctx: Ctx, before: dict) -> None:
    """A run stopped by non-finite numbers: no result, and the checkpoints it kept hold only finite numbers."""
    assert not list(ctx.results.glob("**/seed*.json"))
    for path in ctx.runs.glob("**/checkpoint*.pt"):
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["trainable"].values()), path


def all_of(*checks) -> Callable[[Ctx, dict], None]:
    def check(ctx: Ctx, before: dict) -> None:
        for c in checks:
            c(ctx, before)

    return check


def ship(ctx: Ctx, setting: str) -> list[str]:
    """A SHIP run with one setting; few enough k-means prototypes for the toy task's 64 images, so that a setting
    that passes validation trains (a silent acceptance shows as exit code 0)."""
    return ctx.run("--set", setting, "--set", "num_prototypes=8", method="ship")


TRUNCATED = '{\n  "schema": 1,\n  "task": "svhn",\n  "benchmark": "vtab1k",\n  "acc_la'
SHIP = "results/vtab1k/svhn/ship/seed1.json"

CASES = [
    # --- run settings (names, types, ranges) ---
    Case("unknown-task", lambda c: c.run(task="svhnn"), 2, ("svhnn", "svhn")),
    Case("unknown-method", lambda c: c.run(method="shipp"), 2, ("shipp", "ship")),
    Case("unknown-setting", lambda c: c.run("--set", "learning_rate=1"), 2, ("learning_rate", "Valid run settings")),
    Case("set-without-equals", lambda c: c.run("--set", "lr"), 2, ("key=value", "'lr'")),
    Case("set-bad-json", lambda c: c.run("--set", "levels=[1,3", method="ship"), 2, ("[1,3", "JSON")),
    Case("lr-not-a-number", lambda c: c.run("--set", "lr=abc"), 2, ("lr", "abc")),
    Case("lr-negative", lambda c: c.run("--set", "lr=-1"), 2, ("lr", "-1")),
    Case("lr-nan", lambda c: c.run("--set", "lr=nan"), 2, ("lr", "nan")),
    Case("epochs-zero", lambda c: c.run("--epochs", "0"), 2, ("epochs", "0")),
    Case("batch-size-zero", lambda c: c.run("--set", "batch_size=0"), 2, ("batch_size", "0")),
    Case("eval-every-negative", lambda c: c.run("--set", "eval_every=-1"), 2, ("eval_every", "-1")),
    Case("lr-schedule-unknown", lambda c: c.run("--set", "lr_schedule=weekly"), 2, ("lr_schedule", "weekly", "epoch")),
    Case("seed-negative", lambda c: c.run("--seed", "-1"), 2, ("seed", "-1")),
    Case("protocol-unknown", lambda c: c.run("--protocol", "best"), 2, ("best", "final", "tune")),
    Case("seeds-range-garbled", lambda c: c.sweep(seeds="1-x"), 2, ("--seeds", "1-x")),
    Case("jobs-zero", lambda c: c.sweep("--launcher", "local", "--jobs", "0"), 2, ("--jobs", "0")),
    Case("seeds-range-empty", lambda c: c.sweep(seeds="3-1"), 2, ("--seeds", "'3-1'", "empty", "1-3")),
    Case("lr-1e300-overflows-the-step", lambda c: c.run("--set", "lr=1e300", "--epochs", "3"), 1,
         ("overflowed", "lower the learning rate"), disk=no_result_but_finite_checkpoints),
    Case("lr-1e30-parameters-not-finite", lambda c: c.run("--set", "lr=1e30", "--epochs", "3"), 1,
         ("lower the learning rate",), disk=no_result_but_finite_checkpoints),
    Case("backbone-nan-weights", lambda c: c.run("--set", f"backbone={c.root / 'nan.safetensors'}"), 2,
         ("nan.safetensors", "non-finite weights", "NaN"), not_named=("learning rate",), setup=nan_vit,
         disk=no_result),
    Case("SHIPLIB_HOME-not-a-project", lambda c: c.run("--set", "backbone=mini", task="mini_mnist", data=False), 2,
         ("SHIPLIB_HOME", "not a shiplib project folder"), not_named=("distill", "train it"),
         env={"SHIPLIB_HOME": "{root}/elsewhere"}, setup=lambda c: (c.root / "elsewhere").mkdir()),
    *[Case(f"sub-SHIPLIB_DEBUG-{word or 'empty'}-keeps-tracebacks-off", lambda c: c.run("--device", "tpu"), 2,
           ("'tpu'",), env={"SHIPLIB_DEBUG": word}, subprocess=True)
      for word in ("false", "no", "off", "0", "", "False")],
    # --- tags and paths: nothing may leave the results tree ---
    Case("tag-parent", lambda c: c.run("--tag", "../escape"), 2, ("'../escape'", "letters, digits")),
    Case("tag-absolute", lambda c: c.run("--tag", "/tmp/x"), 2, ("'/tmp/x'",)),
    Case("tag-empty", lambda c: c.run("--tag", ""), 2, ("tag ''", "empty")),
    Case("tag-slash", lambda c: c.run("--tag", "a/b"), 2, ("'a/b'", "'/'")),
    Case("tag-space", lambda c: c.run("--tag", "a b"), 2, ("'a b'", "' '")),
    Case("tag-dot", lambda c: c.run("--tag", "."), 2, ("'.'",)),
    Case("tag-fine", lambda c: c.run("--tag", "lr1e-3+v2"), 0, (),
         disk=has_result("results/vtab1k/svhn/linear+lr1e-3+v2/seed1.json")),
    Case("results-is-a-file", lambda c: c.run(), 2, ("results", "is a file"), setup=write("results", "x")),
    Case("runs-is-a-file", lambda c: c.run(), 2, ("runs", "is a file"), setup=write("runs", "x")),
    # --- devices and runtime ---
    Case("device-tpu", lambda c: c.run("--device", "tpu"), 2, ("'tpu'", "valid: cpu, cuda, cuda:N, auto")),
    Case("device-cuda-garbled", lambda c: c.run("--device", "cuda:x"), 2, ("'cuda:x'", "cuda:N")),
    Case("threads-zero", lambda c: c.run("--threads", "0"), 2, ("threads", "0")),
    Case("workers-negative", lambda c: c.run("--workers", "-1"), 2, ("workers", "-1")),
    # --- method options (checked before any work, naming the option) ---
    Case("threshold-text", lambda c: ship(c, "threshold=abc"), 2, ("threshold", "abc")),
    Case("threshold-negative", lambda c: ship(c, "threshold=-5"), 2, ("threshold", "-5")),
    Case("threshold-nan", lambda c: ship(c, "threshold=nan"), 2, ("threshold", "nan")),
    Case("K-zero", lambda c: ship(c, "K=0"), 2, ("prompt_length", "0")),
    Case("levels-without-0", lambda c: ship(c, "levels=[1,3,5]"), 2, ("levels", "[1, 3, 5]")),
    Case("levels-beyond-depth", lambda c: ship(c, "levels=[0,5,20]"), 2, ("levels", "20")),
    Case("num-prompts-text", lambda c: c.run("--set", "K=many", method="vpt_deep"), 2, ("num_prompts", "many")),
    Case("option-error-before-conflict", lambda c: ship(c, "threshold=abc"), 2,
         ("threshold", "abc"), not_named=("another configuration",),
         setup=write(SHIP, json.dumps(dict(identity={"task": "svhn", "lr": 9.0}, task="svhn", method="ship", seed=1,
                                           acc_last=1.0, acc_max_over_epochs=1.0)))),
    Case("option-error-before-checkpoint-conflict", lambda c: c.run("--set", "drop_path_rate=2"), 2,
         ("drop_path_rate", "2"), not_named=("another configuration",),
         setup=steps(finished("--set", "lr=0.5"), lambda c: c.path(RESULT).unlink())),
    # --- result files that cannot be read: named, kept aside, the cell runs again, dry run and status survive ---
    Case("result-truncated-run", lambda c: c.run(), 0, ("seed1.json", "seed1.json.corrupt"),
         setup=write(RESULT, TRUNCATED), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-not-an-object", lambda c: c.run(), 0, ("seed1.json", "not an object"),
         setup=write(RESULT, "[1, 2, 3]\n"), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-keys-missing", lambda c: c.run(), 0, ("seed1.json", "acc_last"),
         setup=write(RESULT, '{"schema": 1, "identity": {}}\n'), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-empty", lambda c: c.run(), 0, ("seed1.json", "empty"),
         setup=write(RESULT, ""), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-binary", lambda c: c.run(), 0, ("seed1.json", "UTF-8"),
         setup=write(RESULT, b"\x89PNG\r\n\x1a\n\xff\xfe"), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-corrupt-twice", lambda c: c.run(), 0, ("seed1.json.corrupt.1",),
         setup=steps(write(RESULT + ".corrupt", "older"), write(RESULT, TRUNCATED)),
         disk=all_of(kept_aside(RESULT, RESULT + ".corrupt.1"), has_result(aside=(RESULT + ".corrupt",)))),
    Case("result-truncated-dry-run", lambda c: c.sweep("--dry-run"), 0, ("unreadable result", "1 to run"),
         setup=write(RESULT, TRUNCATED), disk=unchanged),
    Case("result-truncated-status", lambda c: c.status(), 0, ("corrupt", "seed1.json.corrupt"),
         setup=write(RESULT, TRUNCATED), disk=unchanged),
    Case("result-truncated-sweep", lambda c: c.sweep(seeds="1-2"), 0, ("seed1.json", "2 run, 0 skipped, 0 failed"),
         setup=write(RESULT, TRUNCATED),
         disk=all_of(kept_aside(RESULT, RESULT + ".corrupt"), has_result(RESULT.replace("seed1", "seed2")))),
    Case("sweep-one-cell-fails-others-go-on", lambda c: c.sweep(tasks=("svhn", "dtd")), 1,
         ("dtd", "FAILED", "not found", "1 run, 0 skipped, 1 failed"), disk=has_result()),
    # --- impossible results: corrupt like a truncated file (named, moved aside, run again; readers skip them) ---
    Case("result-acc-nan", lambda c: c.run(), 0, ("seed1.json", "acc_last is nan", "seed1.json.corrupt"),
         setup=edit_result(acc_last=float("nan")), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-acc-250", lambda c: c.run(), 0, ("seed1.json", "acc_last is 250", "[0, 100]"),
         setup=edit_result(acc_last=250.0), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-acc-max-negative", lambda c: c.run(), 0, ("acc_max_over_epochs is -3",),
         setup=edit_result(acc_max_over_epochs=-3.0), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-schema-99", lambda c: c.run(), 0, ("seed1.json", "schema version is 99"),
         setup=edit_result(schema=99), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-history-short", lambda c: c.run(), 0, ("seed1.json", "history holds epochs []"),
         setup=edit_result(history=[]), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-history-not-last-acc", lambda c: c.run(), 0, ("is not the last epoch's accuracy",),
         setup=edit_result(acc_last=lambda r: r["acc_last"] / 2 + 1), disk=kept_aside(RESULT, RESULT + ".corrupt")),
    Case("result-acc-250-status", lambda c: c.status(), 0, ("corrupt", "[0, 100]"),
         setup=edit_result(acc_last=250.0), disk=unchanged),
    Case("result-acc-nan-dry-run", lambda c: c.sweep("--dry-run"), 0, ("unreadable result", "1 to run"),
         setup=edit_result(acc_last=float("nan")), disk=unchanged),
    # --- lock files that hold no lock: stale at once, named and taken over ---
    Case("lock-null-run", lambda c: c.run(), 0, ("lock.json", "holds null, not a lock"),
         setup=write(f"{WORK}/lock.json", "null"), disk=has_result()),
    Case("lock-list-run", lambda c: c.run(), 0, ("lock.json", "[1, 2]"),
         setup=write(f"{WORK}/lock.json", "[1,2]"), disk=has_result()),
    Case("lock-string-run", lambda c: c.run(), 0, ("lock.json", '"me"'),
         setup=write(f"{WORK}/lock.json", '"me"'), disk=has_result()),
    Case("lock-number-status", lambda c: c.status(), 0, ("failed", "holds 42, not a lock"),
         setup=write(f"{WORK}/lock.json", "42"), disk=unchanged),
    Case("lock-object-without-owner-sweep", lambda c: c.sweep(), 0, ("lock.json", "not a lock", "1 run, 0 skipped"),
         setup=write(f"{WORK}/lock.json", '{"a": 1}'), disk=has_result()),
    Case("lock-being-written", lambda c: c.run(), 1, ("lock.json", "writing its lock"),
         setup=write(f"{WORK}/lock.json", "")),
    Case("failed-record-not-an-object-status", lambda c: c.status(), 0, ("pending",),
         setup=write(f"{WORK}/failed.json", "[1]"), disk=unchanged),
    # --- checkpoints that cannot be read: kept aside, the run starts over (or from the previous checkpoint) ---
    Case("checkpoint-truncated", lambda c: c.run(), 0, ("checkpoint.pt",),
         setup=steps(write(f"{WORK}/checkpoint.pt", b"PK\x03\x04" + bytes(200)), ),
         disk=has_result(aside=(f"{WORK}/checkpoint.pt.corrupt",))),
    Case("checkpoint-text", lambda c: c.run(), 0, ("checkpoint.pt",),
         setup=write(f"{WORK}/checkpoint.pt", "not a checkpoint"),
         disk=has_result(aside=(f"{WORK}/checkpoint.pt.corrupt",))),
    Case("checkpoint-corrupt-twice", lambda c: c.run(), 0, ("checkpoint.pt.corrupt.1",),
         setup=steps(write(f"{WORK}/checkpoint.pt.corrupt", "older"),
                     write(f"{WORK}/checkpoint.pt", "not a checkpoint")),
         disk=has_result(aside=(f"{WORK}/checkpoint.pt.corrupt", f"{WORK}/checkpoint.pt.corrupt.1"))),
    # --- backbone files ---
    Case("backbone-text-as-safetensors", lambda c: c.run("--set", f"backbone={c.root / 'fake.safetensors'}"), 2,
         ("fake.safetensors",), setup=write("fake.safetensors", "this is text, not tensors")),
    Case("backbone-missing-file", lambda c: c.run("--set", f"backbone={c.root / 'none.safetensors'}"), 2,
         ("none.safetensors",)),
    Case("backbone-truncated-pth", lambda c: c.run("--set", f"backbone={c.root / 'half.pth'}"), 2,
         ("half.pth", "not a readable PyTorch file", "torch.save"),
         setup=write("half.pth", b"PK\x03\x04" + bytes(200))),
    # --- architectures are read, never guessed ---
    Case("backbone-without-card", lambda c: c.run("--set", f"backbone={c.root / 'bare.safetensors'}"), 2,
         ("bare.safetensors", "how many attention heads", "backbone_arch", "bare.json"), setup=bare_vit),
    Case("mini-backbone-copied-without-card", lambda c: c.run("--set", f"backbone={c.root / 'mini.safetensors'}"), 2,
         ("mini.safetensors", "width 96", "backbone_arch"), setup=lambda c: shutil.copy(
             REPO / "data/checkpoints/vit_mini_distill.safetensors", c.root / "mini.safetensors")),
    Case("backbone-arch-given", lambda c: c.run("--set", f"backbone={c.root / 'bare.safetensors'}",
                                                "--set", 'backbone_arch={"num_heads": 2}'), 0, (),
         setup=bare_vit, disk=all_of(has_result(), recorded_heads(2))),
    Case("backbone-card-recorded", lambda c: c.run(), 0, (), disk=all_of(has_result(), recorded_heads(2))),
    Case("backbone-arch-heads-do-not-divide", lambda c: c.run("--set", 'backbone_arch={"num_heads": 3}'), 2,
         ("num_heads=3", "width 32")),
    Case("backbone-arch-a-number", lambda c: c.run("--set", "backbone_arch=12"), 2, ("backbone_arch", "12")),
    # --- data: the run refuses before any work, naming the file and line ---
    Case("label-out-of-range-run", lambda c: c.run(), 2, ("train800val200.txt, line 3", "57", "0..9"),
         setup=edit_list("train800val200", 3, "images/train800/000002.png 57")),
    Case("label-not-integer-run", lambda c: c.run(), 2, ("train800val200.txt, line 2", "'two'"),
         setup=edit_list("train800val200", 2, "images/train800/000001.png two")),
    Case("image-missing-run", lambda c: c.run(), 2, ("000005.png",),
         setup=lambda c: (c.data / "svhn/images/train800/000005.png").unlink()),
    Case("empty-train800-tune", lambda c: c.run("--protocol", "tune"), 2, ("train800.txt", "empty"),
         setup=write("data/svhn/train800.txt", "")),
    Case("missing-val200-tune", lambda c: c.run("--protocol", "tune"), 2, ("val200.txt", "missing"),
         setup=lambda c: (c.data / "svhn/val200.txt").unlink()),
    Case("data-root-nowhere", lambda c: c.run("--data-root", str(c.root / "nowhere")), 2, ("svhn", "nowhere")),
    Case("corrupt-png-run", lambda c: c.run(), 2, ("000004.png",), setup=corrupt_image("train800", 4),
         disk=no_result),
    Case("corrupt-png-run-in-a-worker", lambda c: c.run("--workers", "1"), 2,
         ("000004.png", "line 5 of train800val200.txt"), setup=corrupt_image("train800", 4), disk=no_result),
    # --- data check: every problem with its file and line ---
    Case("check-corrupt-png", lambda c: ["check", "--task", "svhn", "--root", str(c.data)], 1,
         ("train800.txt, line 5", "000004.png", "cannot be decoded"), tool="data", setup=corrupt_image("train800", 4)),
    Case("check-label-out-of-range", lambda c: ["check", "--task", "svhn", "--root", str(c.data)], 1,
         ("train800.txt, line 3", "57", "0..9"), tool="data",
         setup=edit_list("train800", 3, "images/train800/000002.png 57")),
    Case("check-empty-list", lambda c: ["check", "--task", "svhn", "--root", str(c.data)], 1,
         ("train800.txt", "empty"), tool="data", setup=write("data/svhn/train800.txt", "\n")),
    Case("check-missing-list", lambda c: ["check", "--task", "svhn", "--root", str(c.data)], 1,
         ("val200.txt", "missing"), tool="data", setup=lambda c: (c.data / "svhn/val200.txt").unlink()),
    Case("check-malformed-line", lambda c: ["check", "--task", "svhn", "--root", str(c.data)], 1,
         ("test.txt, line 7", "expected '<image path> <label>'"), tool="data",
         setup=edit_list("test", 7, "images/test/000006.png 1 extra")),
    Case("check-several-problems", lambda c: ["check", "--task", "svhn", "--root", str(c.data)], 1,
         ("val200.txt, line 2", "val200.txt, line 9", "train800val200.txt, line 4"), tool="data",
         setup=steps(edit_list("val200", 2, "images/val200/000001.png 99"),
                     edit_list("val200", 9, "images/val200/000008.png -1"),
                     edit_list("train800val200", 4, "images/train800/000003.png 11"))),
    # --- data that trains silently wrong: evaluation images in training, lines twice; what a path really is ---
    Case("check-test-is-train", check, 1, ("test.txt", "48 of its 48 images are also in train800val200"),
         tool="data", setup=copy_list("train800", "test")),
    Case("check-test-copies-of-train", check, 1, ("test.txt", "also in train800val200 (same content)"),
         tool="data", setup=copy_images("train800", "test", 6)),
    Case("run-test-is-train", lambda c: c.run(), 2, ("test.txt", "also in train800val200", "rebuild"),
         setup=copy_list("train800", "test")),
    Case("run-tune-val-copies-of-train", lambda c: c.run("--protocol", "tune"), 2, ("val200.txt", "also in train800"),
         setup=copy_images("train800", "val200", 2)),
    Case("check-200-copies-of-a-line", check, 1, ("train800.txt", "listed 200 times"), tool="data",
         setup=write("data/svhn/train800.txt", "images/train800/000000.png 0\n" * 200)),
    Case("run-line-twice", lambda c: c.run(), 2, ("train800val200.txt", "listed 2 times (lines 3, 5)"),
         setup=edit_list("train800val200", 5, "images/train800/000002.png 2")),
    Case("check-bom", check, 1, ("train800.txt, line 1", "byte-order mark"), tool="data", setup=bom("train800")),
    Case("run-bom", lambda c: c.run(), 2, ("train800val200.txt, line 1", "byte-order mark"),
         setup=bom("train800val200"), not_named=("missing",)),
    Case("check-symlink-loop", check, 1, ("train800.txt, line 4", "symbolic link loop"), tool="data",
         setup=symlink("train800", 3, "000003.png")),
    Case("run-dangling-symlink", lambda c: c.run(), 2, ("000003.png", "symbolic link to", "does not exist"),
         setup=symlink("train800", 3, "nowhere.png")),
    Case("run-16-bit-images", lambda c: c.run(), 0, (), setup=sixteen_bit("train800"), disk=has_result()),
    Case("check-unknown-task", lambda c: ["check", "--task", "svhnn"], 2, ("svhnn",), tool="data"),
    Case("prepare-without-task", lambda c: ["prepare", "--out", str(c.root / "prepared")], 2, ("--task", "--all"),
         tool="data"),
    Case("build-mini-with-a-vtab-task", lambda c: ["build-mini", "--out", str(c.root / "m"), "--task", "svhn"], 2,
         ("svhn", "not mini", "mini_mnist"), tool="data"),
    Case("check-max-images-negative", lambda c: ["check", "--task", "svhn", "--max-images", "-1"], 2,
         ("--max-images", "-1"), tool="data"),
    # --- environment ---
    Case("SHIPLIB_DATA-is-a-file-run", lambda c: c.run(task="mini_mnist", data=False), 2,
         ("SHIPLIB_DATA", "a file"), env={"SHIPLIB_DATA": "{root}/afile"}, setup=write("afile", "x")),
    Case("SHIPLIB_DATA-missing-check", lambda c: ["check", "--task", "mini_mnist"], 1,
         ("SHIPLIB_DATA", "does not exist"), tool="data", env={"SHIPLIB_DATA": "{root}/nothing"}),
    Case("memory-limit-too-small", lambda c: c.run(), 1, ("SHIPLIB_MEMORY_LIMIT", "batch_size"),
         env={"SHIPLIB_MEMORY_LIMIT": "1k"}, disk=no_result),
    Case("memory-limit-garbled", lambda c: c.run(), 2, ("'lots'", "64G"), env={"SHIPLIB_MEMORY_LIMIT": "lots"}),
    Case("ship-huge-prompt-refused", lambda c: c.run("--set", "K=4000", "--set", "levels=[0,2]", "--set", "ap=false",
                                                     method="ship"), 1,
         ("tokens", "batch_size", "SHIPLIB_MEMORY_LIMIT"), env={"SHIPLIB_MEMORY_LIMIT": "64M"}, disk=no_result),
    # --- state: a cell that is being trained elsewhere ---
    Case("cell-locked-by-live-process", lambda c: c.run(), 1, ("being trained", "pid"),
         setup=lambda c: _lock(c, os.getppid())),
    Case("cell-lock-of-dead-process", lambda c: c.run(), 0, (), setup=lambda c: _lock(c, _dead_pid()),
         disk=has_result()),
    # --- subprocesses: the real entry points ---
    Case("sub-truncated-result-dry-run-mini", lambda c: ["sweep", "--tasks", "mini_mnist", "--methods", "ship",
                                                         "--seeds", "1", "--dry-run", "--results", "results",
                                                         "--runs", "runs"], 0,
         ("seed1.json", "to run"), setup=write("results/mini/mini_mnist/ship/seed1.json", TRUNCATED), disk=unchanged,
         subprocess=True),
    Case("sub-device-tpu", lambda c: c.run("--device", "tpu"), 2, ("'tpu'", "valid: cpu, cuda, cuda:N, auto"),
         subprocess=True),
    Case("sub-label-out-of-range-run", lambda c: c.run("--protocol", "tune"), 2, ("train800.txt, line 3", "57"),
         setup=edit_list("train800", 3, "images/train800/000002.png 57"), subprocess=True),
    Case("sub-check-corrupt-png", lambda c: ["check", "--task", "svhn", "--root", str(c.data)], 1,
         ("train800.txt, line 5", "000004.png"), tool="data", setup=corrupt_image("train800", 4), subprocess=True),
    Case("sub-SHIPLIB_DATA-is-a-file-check", lambda c: ["check", "--task", "mini_mnist"], 1,
         ("SHIPLIB_DATA", "a file"), tool="data", env={"SHIPLIB_DATA": "{root}/afile"}, setup=write("afile", "x"),
         subprocess=True),
]


def _lock(ctx: Ctx, pid: int) -> None:
    import socket

    wd = ctx.path(WORK)
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "lock.json").write_text(json.dumps(dict(job_id="local", host=socket.gethostname().split(".")[0], pid=pid,
                                                  started_at="2024-01-01T00:00:00+00:00", token="t")))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def ctx(tmp_path, tiny_task_root, tiny_vit_file) -> Ctx:
    shutil.copytree(tiny_task_root, tmp_path / "data")
    return Ctx(root=tmp_path, vit=tiny_vit_file)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_input(case: Case, ctx: Ctx, capsys, caplog, monkeypatch):
    monkeypatch.delenv("SHIPLIB_DATA", raising=False)
    monkeypatch.delenv("SHIPLIB_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("SHIPLIB_DEBUG", raising=False)
    if case.setup:
        case.setup(ctx)
    capsys.readouterr()
    before = ctx.files()
    if case.subprocess:
        rc, text = _invoke_subprocess(case, ctx)
    else:
        rc, text = _invoke_in_process(case, ctx, capsys, caplog, monkeypatch)
    assert TRACEBACK not in text, text
    assert rc == case.rc, f"exit code {rc}, expected {case.rc}:\n{text}"
    missing = [name for name in case.names if name not in text]
    assert not missing, f"the message does not name {missing}:\n{text}"
    hidden = [name for name in case.not_named if name in text]
    assert not hidden, f"{hidden} shown instead of the real problem:\n{text}"
    if rc != 0:
        assert len([line for line in text.splitlines() if line.startswith("error:")]) <= 1, text
    (case.disk or (unchanged if rc != 0 else (lambda c, b: None)))(ctx, before)


# ----- cases that need more than one command or an API call -----
def test_debug_shows_the_traceback(ctx):
    proc = subprocess.run([sys.executable, "-m", "shiplib", "run", *ctx.run("--device", "tpu")[1:], "--debug"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode != 0 and TRACEBACK in proc.stderr and "ConfigError" in proc.stderr


@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_cuda_without_a_gpu(ctx, capsys, device):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = ctx.files()
    assert shiplib_main(ctx.run("--device", device)) == 2
    err = capsys.readouterr().err
    assert f"device '{device}'" in err and "--device cpu" in err and TRACEBACK not in err
    unchanged(ctx, before)


def test_hierarchy_cache_follows_the_images(ctx, caplog):
    """Same paths, other pixels: the second SHIP run computes its hierarchy again instead of using the cache."""
    caplog.set_level(logging.INFO)
    ship = ("--set", "K=2", "--set", "num_prototypes=4")
    assert shiplib_main(ctx.run(*ship, method="ship")) == 0
    for png in sorted((ctx.data / "svhn/images/train800").glob("*.png"))[:8]:
        shutil.copy(ctx.data / "svhn/images/val200/000000.png", png)  # not a test image: that would leak
    caplog.clear()
    assert shiplib_main(ctx.run(*ship, "--results", str(ctx.root / "results2"), method="ship")) == 0
    assert "using the cache" not in caplog.text and "data step of ship on" in caplog.text
    assert len(list((ctx.runs / "_cache").rglob("*.npz"))) == 2


def test_full_disk_is_named_and_leaves_no_partial_files(ctx, monkeypatch, capsys):
    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full)
    assert shiplib_main(ctx.run()) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "checkpoint" in err and TRACEBACK not in err
    assert not ctx.path(RESULT).exists()
    assert not [p for p in ctx.runs.rglob("*") if p.suffix in (".pt", ".tmp")]


def test_result_records_the_data_root(ctx):
    assert shiplib_main(ctx.run()) == 0
    assert json.loads(ctx.path(RESULT).read_text())["config"]["data_root"]


def test_concurrent_runs_train_a_cell_once(ctx):
    """Two `run` processes for the same cell: one trains, the other is refused; the log holds each epoch once."""
    argv = [sys.executable, "-m", "shiplib", *ctx.run("--epochs", "3")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert all(TRACEBACK not in err for _, err in outs), outs
    log = [json.loads(line)["epoch"] for line in (ctx.path(WORK) / "log.jsonl").read_text().splitlines()]
    assert log == [0, 1, 2]
    # either both finished one after the other (the second found the result), or the second was refused
    assert codes in ([0, 0], [0, 1]), outs
    if codes == [0, 1]:
        assert any("being trained" in err for _, err in outs), outs


def test_read_only_results_folder_is_found_before_training(ctx):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ctx.results.mkdir()
    ctx.results.chmod(0o500)
    try:
        assert shiplib_main(ctx.run()) == 2
    finally:
        ctx.results.chmod(0o700)
    assert not ctx.runs.exists() or not list(ctx.runs.rglob("checkpoint*.pt"))


# ----- in-process helpers: notebook parameters, resource estimate, error classes -----
@pytest.mark.parametrize("given", [
    {"lr": 0.005, "K": 20},
    '{"lr": 0.005, "K": 20}',
    "lr=0.005, K=20",
    "lr=0.005\nK=20\n",
    ["lr=0.005", "K=20"],
])
def test_overrides_in_every_form(given):
    from shiplib.engine.config import parse_overrides

    assert parse_overrides(given) == {"lr": 0.005, "K": 20}


def test_overrides_keep_lists_together():
    from shiplib.engine.config import parse_overrides

    assert parse_overrides("levels=[0, 4, 8], lr=1e-3, tag=a") == {"levels": [0, 4, 8], "lr": 1e-3, "tag": "a"}


@pytest.mark.parametrize("given, named", [
    ("{lr: 0.005}", ["{lr: 0.005}", "not valid JSON", "key=value"]),
    ("lr=0.1, 5", ["'5'", "key=value"]),
    ('["lr=1"]', ["JSON"]),
    (3.5, ["float", "dict"]),
])
def test_bad_overrides_fail_clearly(given, named):
    from shiplib.engine.config import parse_overrides
    from shiplib.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_overrides(given)
    assert all(n in str(e.value) for n in named), str(e.value)


def test_notebook_overrides_as_papermill_passes_them():
    """`papermill notebooks/vtab.ipynb o.ipynb -p overrides '{"lr": 0.005}'`: the parameters cell, papermill's
    injected cell and the configuration cell, executed as the kernel would (no training)."""
    import nbformat
    from papermill.translators import translate_parameters

    nb = nbformat.read(REPO / "notebooks" / "vtab.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    config_cell = next(s for s in code if "with_overrides" in s)
    header = nb.cells[0].source
    assert "-p overrides '{\"lr\": 0.005" in header  # the header shows the command that works
    for value, lr in (('{"lr": 0.005}', 0.005), ("lr=0.002, K=4", 0.002), ({"lr": 0.003}, 0.003)):
        scope: dict = {}
        exec(code[0], scope)
        exec(translate_parameters("python", "python", {"overrides": value}, "Injected parameters"), scope)
        exec("from shiplib.engine import RunConfig, resolve_config\nfrom shiplib.engine.run import paths_for\n"
             "from shiplib.report import cli_command, describe_config", scope)
        exec(config_cell.replace("describe_config(resolved)", "table = describe_config(resolved)"), scope)
        assert scope["cfg"].lr == lr and scope["table"].loc["lr", "source"] == "user"


def test_notebook_task_lists_as_papermill_passes_them():
    from shiplib.errors import ConfigError
    from shiplib.report.notebook import pick_tasks

    assert pick_tasks(tasks='["mini_mnist", "SVHN"]') == pick_tasks(tasks="mini_mnist, svhn") == ["mini_mnist", "svhn"]
    for bad, named in (("mini_mnist, svhnn", "svhnn"), ('["mini_mnist"', "JSON list")):
        with pytest.raises(ConfigError, match=named):
            pick_tasks(tasks=bad)


def test_errors_render_as_one_line_in_notebooks(monkeypatch):
    from shiplib.errors import ConfigError, DataError, ResourceError, ShiplibError, StateError

    monkeypatch.delenv("SHIPLIB_DEBUG", raising=False)
    for cls, code in ((ConfigError, 2), (DataError, 2), (StateError, 1), (ResourceError, 1)):
        e = cls("x is wrong")
        assert isinstance(e, ShiplibError) and e.exit_code == code
        assert e._render_traceback_() == [f"{cls.__name__}: x is wrong"]  # IPython shows this, not the stack
    from shiplib.engine.config import ConfigError as EngineConfigError

    assert EngineConfigError is ConfigError and issubclass(ConfigError, ValueError)
    monkeypatch.setenv("SHIPLIB_DEBUG", "1")
    try:
        raise StateError("y")
    except StateError as e:
        assert TRACEBACK in "".join(e._render_traceback_())


def test_full_disk_and_permission_messages_say_what_to_do():
    from shiplib.errors import exit_code, message

    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoint.pt")
    assert "disk is full" in message(full) and "checkpoint.pt" in message(full) and exit_code(full) == 1
    denied = PermissionError(errno.EACCES, "Permission denied", "results/x.json")
    assert "--results" in message(denied)


def _ship_model(prompt_length: int):
    from shiplib.methods import build_model, get_method
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)
    options = {**get_method("ship").bench_options(vit), "prompt_length": prompt_length}
    return build_model("ship", backbone=vit, num_classes=10, **options)


def test_estimate_counts_prompt_tokens_and_scales_with_the_batch():
    from shiplib.engine.resources import estimate_run

    small, large = _ship_model(5), _ship_model(500)
    a, b = estimate_run(small, 64, 32), estimate_run(large, 64, 32)
    assert b.tokens - a.tokens == 495  # the 495 more prompt tokens enter a block
    assert b.activation_bytes_per_image > 4 * a.activation_bytes_per_image
    assert estimate_run(large, 128, 32).activation_bytes == 2 * b.activation_bytes


def test_estimate_does_not_change_the_run():
    """The probe restores the random state and leaves parameters and gradients alone."""
    from shiplib.engine.resources import estimate_run

    model = _ship_model(5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    estimate_run(model, 64, 32)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_preflight_refuses_a_huge_prompt_quickly_and_names_the_fix(monkeypatch):
    import time

    from shiplib.engine.resources import MEMORY_LIMIT_ENV, preflight
    from shiplib.errors import ResourceError

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "512M")
    model = _ship_model(5000)
    start = time.perf_counter()
    with pytest.raises(ResourceError) as e:
        preflight(model, batch_size=64, img_size=32, train_size=1000)
    assert time.perf_counter() - start < 30
    text = str(e.value)
    assert "tokens" in text and "batch_size" in text and MEMORY_LIMIT_ENV in text and "512.0 MB" in text


def test_long_epoch_is_announced(caplog):
    from shiplib.engine.resources import log_epoch_time

    caplog.set_level(logging.INFO)
    log_epoch_time(2.0, 600)  # 20 minutes
    assert "one epoch ≈ 20.0 min" in caplog.text and any(r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    log_epoch_time(0.1, 15)
    assert "one epoch ≈ 2 s" in caplog.text and all(r.levelno == logging.INFO for r in caplog.records)


def test_unreadable_results_are_skipped_by_readers(tmp_path, write_fake_result, caplog):
    from shiplib.engine.results import is_finished, load_results

    good = write_fake_result("svhn", "linear", 1, 50.0)
    bad = good.with_name("seed2.json")
    bad.write_text(TRUNCATED)
    frame = load_results(tmp_path / "results")
    assert list(frame["seed"]) == [1] and "seed2.json" in caplog.text
    assert not is_finished(bad, {}) and bad.is_file()  # a reader names it, it does not move it


# ----- results are never overwritten by another run -----
def test_concurrent_runs_in_other_runs_folders_keep_one_result(ctx):
    """Two `run` processes for one cell with other settings, sharing --results but not --runs: the first result
    is kept, the other run is refused in one line naming both (at its start or when it writes)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def start(runs: str, *extra: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "shiplib", *ctx.run("--runs", str(ctx.root / runs), *extra)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    slow = start("runs_slow", "--epochs", "6", "--set", "lr=0.2")
    log = ctx.root / "runs_slow" / WORK.partition("/")[2] / "log.jsonl"
    while not log.exists() and slow.poll() is None:  # the slow run has checked for a result and is training
        time.sleep(0.05)
    fast = start("runs_fast", "--set", "lr=0.1")
    outs = {name: (p.wait(timeout=300), *p.communicate()) for name, p in (("fast", fast), ("slow", slow))}
    assert all(TRACEBACK not in err for _, _, err in outs.values()), outs
    codes = {name: rc for name, (rc, _, _) in outs.items()}
    winner = min(codes, key=codes.get)
    assert sorted(codes.values()) == [0, 1] or sorted(codes.values()) == [0, 2], outs
    loser_err = outs[max(codes, key=codes.get)][2]
    assert len([line for line in loser_err.splitlines() if line.startswith("error:")]) == 1, loser_err
    assert "seed1.json" in loser_err and ("while this run" in loser_err or "another configuration" in loser_err)
    if "while this run" in loser_err:
        assert "runs_slow" in loser_err and "runs_fast" in loser_err  # both runs named
    results = list(ctx.results.rglob("seed*.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["identity"]["lr"] == \
        {"fast": 0.1, "slow": 0.2}[winner]


def test_a_result_written_meanwhile_is_kept(ctx):
    """The write-time check itself: a result that appeared after the run started is never replaced; the one the
    run saw at its start (what --force replaces) is."""
    from shiplib.engine.results import ResultConflictError, commit_result, file_state, read_result

    assert shiplib_main(ctx.run()) == 0
    path = ctx.path(RESULT)
    before = path.read_bytes()
    mine = dict(read_result(path), identity={**read_result(path)["identity"], "lr": 9.0}, started_at="later")
    with pytest.raises(ResultConflictError, match="written by another run") as e:
        commit_result(path, mine, seen_at_start=None)
    assert "lr: " in str(e.value) and path.read_bytes() == before
    assert not list(path.parent.glob(".*.lock"))  # the write lock is gone
    commit_result(path, mine, seen_at_start=file_state(path))
    assert read_result(path)["identity"]["lr"] == 9.0


# ----- locks and full disks -----
@pytest.fixture
def full_disk(tmp_path):
    """A 64 kB tmpfs filled to the last byte (needs the right to mount: root)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(bytes(512))
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_lock_is_named_and_not_left_empty(full_disk):
    from shiplib.errors import ResourceError
    from shiplib.launch import locks

    with pytest.raises(ResourceError) as e:
        locks.acquire(full_disk)
    assert "lock.json" in str(e.value) and "free there" in str(e.value) and "needed" in str(e.value)
    assert not (full_disk / "lock.json").exists()


def test_full_disk_run_is_refused_before_work_in_one_line(ctx, full_disk, capsys):
    assert shiplib_main(ctx.run("--runs", str(full_disk / "runs"))) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "No space left" in err and str(full_disk) in err and "needed" in err
    assert not list(full_disk.rglob("lock.json"))


# ----- signals: SIGTERM/SIGHUP stop like Ctrl-C; nothing half-written survives; resume is exact -----
_KILL_IN_CHECKPOINT_WRITE = """
import os, signal, sys, torch
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a run in a terminal: under nohup SIGHUP is ignored, and runs respect it
real_save = torch.save
def save(obj, f, *args, **kwargs):  # the checkpoint of epoch 1 is in its temporary file, not yet renamed
    real_save(obj, f, *args, **kwargs)
    if ".checkpoint.pt." in str(f) and obj["epoch"] == 1:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
torch.save = save
from shiplib.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _last_line(stderr: str) -> str:
    """The closing line of a stopped command (log lines may precede it); no traceback anywhere."""
    assert TRACEBACK not in stderr and stderr.count("stopped by") == 1, stderr
    return stderr.strip().splitlines()[-1]


def _without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_kill_during_a_checkpoint_write_loses_nothing(ctx, sig):
    """A run stopped while its checkpoint is being written: SIGTERM/SIGHUP print one line, exit 128+N and remove
    the temporary file; SIGKILL cannot be handled, so the next run removes what it left. The next run resumes
    after the last complete checkpoint and gives exactly the uninterrupted run's numbers."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = ctx.run("--epochs", "3")
    proc = subprocess.run([sys.executable, "-c", _KILL_IN_CHECKPOINT_WRITE, sig, *argv], capture_output=True,
                          text=True, env=env, timeout=300)
    signum = getattr(signal, sig)
    work = ctx.path(WORK)
    if sig == "SIGKILL":
        assert proc.returncode == -signum and list(work.glob(".checkpoint.pt.*.tmp"))
    else:
        assert proc.returncode == 128 + signum, proc.stderr
        assert _last_line(proc.stderr) == f"stopped by {sig} (a run started again resumes after its last saved epoch)"
        assert not list(work.glob(".*.tmp")) and not (work / "lock.json").exists()
    assert not ctx.path(RESULT).exists()
    resumed = subprocess.run([sys.executable, "-m", "shiplib", *argv], capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(work.glob(".*.tmp")) and not list(ctx.results.rglob("*.tmp"))
    result = json.loads(ctx.path(RESULT).read_text())
    assert result["resumed_from_epoch"] == 0  # epoch 1's checkpoint never became the checkpoint
    reference = ctx.root / "reference"
    assert shiplib_main(ctx.run("--epochs", "3", "--results", str(reference / "results"),
                                "--runs", str(reference / "runs"))) == 0
    expected = json.loads((reference / RESULT).read_text())
    assert _without_timings(result["history"]) == _without_timings(expected["history"])
    assert [result[k] for k in ("acc_last", "acc_max_over_epochs")] == \
        [expected[k] for k in ("acc_last", "acc_max_over_epochs")]


def test_sigterm_to_a_local_sweep_stops_its_runs(ctx):
    """SIGTERM to `sweep --launcher local`: its run is cancelled through submitit and stops (no process left
    training, no result written), its lock is released and the sweep says so in one error line (exit 143)."""
    argv = [sys.executable, "-m", "shiplib", *ctx.sweep("--epochs", "100000", "--launcher", "local", "--jobs", "1")]
    sweep = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = ctx.path(WORK) / "log.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and log.stat().st_size) and time.time() < deadline:  # one epoch done: training
        time.sleep(0.1)
    run_pid = json.loads((ctx.path(WORK) / "lock.json").read_text())["pid"]
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 143, err
    assert _last_line(err) == "stopped by SIGTERM (a run started again resumes after its last saved epoch)"
    assert "stopped 1 running cell(s): svhn linear seed 1" in out
    with pytest.raises(ProcessLookupError):
        os.kill(run_pid, 0)
    assert not (ctx.path(WORK) / "lock.json").exists() and not ctx.path(RESULT).exists()
    assert not list(ctx.path(WORK).glob(".*.tmp"))


def test_threads_above_the_cores_warn_once(ctx, capsys, caplog):
    from shiplib.engine.resources import usable_cores

    caplog.set_level(logging.INFO)
    too_many = str(usable_cores() + 1)
    assert shiplib_main(ctx.sweep("--threads", too_many, "--dry-run", seeds="1-3")) == 0
    text = capsys.readouterr().out + caplog.text
    assert text.count(f"--threads {too_many} is more than the") == 1, text


def test_16_bit_images_keep_their_range(tmp_path):
    """A 16-bit grayscale PNG (values 0..65535) decodes to 8 bits by scaling (v * 255 / 65535), where
    convert("RGB") would clip every value above 255 to white."""
    from PIL import Image

    from shiplib.data.folder import open_rgb

    values = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL reads it as a high-depth mode
    rgb = np.asarray(open_rgb(path))
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    clipped = np.asarray(Image.open(path).convert("RGB"))[..., 0]
    assert (clipped != expected).mean() > 0.9  # what the old conversion gave
    floats = Image.fromarray((values / 65535.0).astype(np.float32))
    from shiplib.data.images import to_rgb

    assert np.abs(np.asarray(to_rgb(floats))[..., 1].astype(int) - expected).max() <= 1
