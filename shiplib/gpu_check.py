"""A first check of a GPU (`bash scripts/gpu_check.sh`, or `python -m shiplib.gpu_check`).

Without a CUDA device it says so in one line and exits 0. On a GPU it prints one table of:

- speed: ViT-B/16 (timm `vit_base_patch16_224`, random weights, no download) at batch 64, the plain timm forward
  and SHIP's eval forward and training step, per precision the device runs (fp32, tf32, bf16), each timed by
  `shiplib.bench.run_bench` (interleaved rounds) with peak memory;
- a run: 2 epochs of SHIP through `run_experiment` on a synthetic task in the VTAB-1k layout at 224 px, with its
  epoch time, accuracy and peak memory;
- agreement: the device's logits against the CPU's for the same weights and images, within
  `shiplib.repro`'s `gpu_logits` tolerance.

Every part is the CPU code path run on another device; `run_checks(CheckSettings(device="cpu", ...), work)` runs
the same table here.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import repro
from .bench import DEFAULT_BENCH_BACKBONE, BenchSettings, build_bench_model, run_bench
from .data.synthetic import write_synthetic_task
from .engine import RunConfig, run_experiment
from .engine.precision import PRECISIONS, Precision, PrecisionError, check_precision

#: The precisions timed (fp16 needs a gradient scaler and is rarely the choice where bf16 runs).
TIMED_PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class CheckSettings:
    """What the check runs: `batch` images per batch in the speed rows and the short run; the short run's
    `epochs`, image size (`img_size`), split `sizes` (default VTAB-1k's) and SHIP `options`."""

    device: str = "cuda"
    backbone: str = DEFAULT_BENCH_BACKBONE
    batch: int = 64
    img_size: int = 224
    epochs: int = 2
    repeats: int = 5  # timed rounds of each speed row
    warmup: int = 2  # untimed rounds first (compiled rows need at least one)
    precisions: tuple[str, ...] = TIMED_PRECISIONS
    sizes: dict | None = None
    options: dict = field(default_factory=dict)


@dataclass
class Row:
    part: str
    setting: str
    figure: str
    value: str


def _mb(nbytes: float | None) -> str:
    return "–" if nbytes is None else f"{nbytes / 2 ** 20:,.0f} MB"


def speed_rows(check: CheckSettings, compiled_too: bool = True) -> list[Row]:
    """Plain timm and SHIP per precision, eager and (with `compiled_too`, which needs a warm-up round to compile
    in) through torch.compile, via `run_bench`."""
    rows = []
    for precision in check.precisions:
        try:
            check_precision(precision, check.device)
        except PrecisionError as e:
            rows.append(Row("speed", precision, "skipped", str(e).split(":")[0]))
            continue
        for compiled in ((False, True) if compiled_too and check.warmup >= 1 else (False,)):
            r = run_bench(BenchSettings("ship", check.backbone, batch=check.batch, threads=None,
                                        repeats=check.repeats, warmup=check.warmup, device=check.device,
                                        floor=True, progress=False, precision=precision, compile=compiled))
            setting = precision + (" compiled" if compiled else "")
            rows += [Row("speed", setting, "timm eval / batch", f"{r['timm_eval_s']:.3f} s"),
                     Row("speed", setting, "SHIP eval / batch",
                         f"{r['eval_s']:.3f} s ({r['eval_vs_timm']:.2f}× timm)"),
                     Row("speed", setting, "SHIP train step",
                         f"{r['train_s']:.3f} s ({r['train_vs_timm_train_floor']:.2f}× floor)"),
                     Row("speed", setting, "SHIP train peak memory", f"{r['train_mem_mb']:,.0f} MB")]
    return rows


def run_rows(check: CheckSettings, work: Path, precision: str = "fp32") -> list[Row]:
    """`check.epochs` epochs of SHIP on a synthetic VTAB-1k-layout task through `run_experiment`, with peak
    memory."""
    root, img_size, device = work / "data", check.img_size, check.device
    if not (root / "svhn").is_dir():
        write_synthetic_task(root, "svhn", classes=10, size=img_size, ext="jpg",
                             sizes=check.sizes or dict(train800=800, val200=200, test=500))
    cfg = RunConfig(task="svhn", method="ship", epochs=check.epochs, eval_every=1, backbone=str(check.backbone),
                    pretrained=False, img_size=img_size, precision=precision, device=device,
                    batch_size=check.batch, data_root=str(root), results_dir=str(work / "results"),
                    runs_dir=str(work / "runs"), progress=False, threads=None, options=dict(check.options or {}))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    r = run_experiment(cfg, force=True)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    setting = f"{precision}, {img_size} px, {r['train_size']} images"
    epochs = [Row("run", setting, f"epoch {h['epoch']} (train + eval)", f"{h['seconds']:.1f} s") for h in r["history"]]
    return epochs + [Row("run", setting, "accuracy (random weights)", f"{r['acc_last']:.1f} %"),
                     Row("run", setting, "peak memory", _mb(peak))]


def logits_rows(device: str, backbone=DEFAULT_BENCH_BACKBONE, batch: int = 8, precision: str = "fp32") -> list[Row]:
    """SHIP's eval logits on `device` against the CPU's (fp32), same weights and images."""
    model = build_bench_model("ship", backbone).eval()
    x = torch.randn(batch, 3, *model.vit.patch_embed.img_size, generator=torch.Generator().manual_seed(0))
    check_precision(precision, device)
    with torch.no_grad():
        cpu = model(x)
        with Precision(precision, device).autocast():
            there = model.to(device)(x.to(device)).float().cpu()
    diff = float((there - cpu).abs().max())
    ok = repro.within("gpu_logits", there, cpu)
    return [Row("logits", f"{precision} vs CPU fp32", "max |difference|",
                f"{diff:.2e} ({'within' if ok else 'BEYOND'} {repro.tolerance('gpu_logits').describe()})")]


def run_checks(check: CheckSettings, work: Path) -> list[Row]:
    """Every row of the check (speed per precision, the short run at the best precision in the folder `work`,
    logits per precision)."""
    rows = speed_rows(check)
    runnable = [p for p in check.precisions if not _refused(p, check.device)]
    best = "bf16" if "bf16" in runnable else runnable[0]
    rows += run_rows(check, work, best)
    for precision in runnable:
        rows += logits_rows(check.device, check.backbone, precision=precision)
    return rows


def _refused(precision: str, device: str) -> bool:
    try:
        check_precision(precision, device)
    except PrecisionError:
        return True
    return False


def format_table(rows: list[Row]) -> str:
    cols = [("part", 6), ("setting", max(len(r.setting) for r in rows)), ("figure", max(len(r.figure) for r in rows))]
    lines = ["  ".join(name.ljust(width) for name, width in cols) + "  value"]
    lines += ["  ".join(getattr(r, name).ljust(width) for name, width in cols) + "  " + r.value for r in rows]
    return "\n".join(lines)


def no_gpu_message() -> str:
    return (f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
            "nothing to check on this machine.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shiplib.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the synthetic run (default 2)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(no_gpu_message())
        return 0
    print(f"gpu_check on {torch.cuda.get_device_name(args.device)} (torch {torch.__version__}); choices: "
          f"{', '.join(PRECISIONS)}; eager and compiled variants timed",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="shiplib-gpu-check-") as tmp:
        rows = run_checks(CheckSettings(device=args.device, batch=args.batch, epochs=args.epochs), Path(tmp))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
