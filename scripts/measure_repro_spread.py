"""Measure how far float-derived numbers move when the CPU kernels change (the cross-machine spread).

Each variant runs in a fresh process with environment switches that select other BLAS / ATen kernels, as
another CPU would, and re-computes (a) the mini backbone's probe evidence and (b) one committed mini-VTAB run per
method (mini_mnist, seed 1). Every number is compared with the committed one; the spread per quantity is what
`shiplib.repro` chooses its tolerances from.

    python scripts/measure_repro_spread.py                 # every variant, results/repro/spread/<variant>.json
    python scripts/measure_repro_spread.py --variants threads1 avx2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "repro" / "spread"

#: name -> (threads, environment). The committed runs used 1 thread; the card's evidence torch's default (2).
VARIANTS = {
    "threads1": (1, {}),
    "threads2": (2, {}),
    # the kernels an AVX2-only CPU (e.g. AMD Zen 2/3) selects: ATen AVX2 paths, MKL AVX2, OpenBLAS Haswell
    "avx2": (1, {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}),
    # the oldest generic kernels: no ATen vectorisation, MKL SSE4.2, OpenBLAS Prescott
    "generic": (1, {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                    "OPENBLAS_CORETYPE": "Prescott"}),
}


def measure(variant: str, threads: int, methods: list[str], evidence: bool) -> dict:
    import torch
    from threadpoolctl import threadpool_info

    from shiplib.backbones import evidence as ev
    from shiplib.engine import RunConfig, run_experiment
    from shiplib.engine.results import read_result, result_path

    torch.set_num_threads(threads)
    out = dict(variant=variant, threads=threads, env={k: os.environ.get(k) for k in VARIANTS["generic"][1]},
               torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
               blas=[(i.get("internal_api"), i.get("architecture")) for i in threadpool_info()], runs={})
    if evidence:
        card = ev.load_card()
        fresh = ev.compute_evidence(*ev.pretrained_and_random_mini(seed=0))
        out["evidence"] = dict(
            probe={t: {k: [fresh["linear_probe"]["tasks"][t][k]["test_acc"], r[k]["test_acc"]]
                       for k in ("pretrained", "random_init")}
                   for t, r in card["evidence"]["linear_probe"]["tasks"].items()},
            chosen_C_same=all(fresh["linear_probe"]["tasks"][t][k]["C"] == r[k]["C"]
                              for t, r in card["evidence"]["linear_probe"]["tasks"].items()
                              for k in ("pretrained", "random_init")),
            affinity_max_abs_diff=max(abs(a - b) for k in ("pretrained", "random_init")
                                      for ra, rb in zip(fresh["affinity"]["matrices"][k],
                                                        card["evidence"]["affinity"]["matrices"][k])
                                      for a, b in zip(ra, rb)))
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            committed = read_result(result_path(REPO / "results", "mini", "mini_mnist", method, 1))
            t0 = time.time()
            r = run_experiment(RunConfig(task="mini_mnist", method=method, seed=1, threads=threads, progress=False,
                                         results_dir=f"{tmp}/results", runs_dir=f"{tmp}/runs"))
            loss_rel = max(abs(a["loss"] - b["loss"]) / abs(b["loss"])
                           for a, b in zip(r["history"], committed["history"]))
            out["runs"][method] = dict(acc_last=[r["acc_last"], committed["acc_last"]],
                                       acc_max_over_epochs=[r["acc_max_over_epochs"], committed["acc_max_over_epochs"]],
                                       loss_max_rel_diff=loss_rel, bit_identical_history=all(
                                           a["loss"] == b["loss"] for a, b in zip(r["history"], committed["history"])),
                                       seconds=round(time.time() - t0, 1))
            print(variant, method, out["runs"][method], flush=True)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    p.add_argument("--no-evidence", action="store_true", help="skip the probe evidence")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        from shiplib.methods import list_methods
        from shiplib.utils.io import atomic_write_json

        threads, _ = VARIANTS[a.child]
        res = measure(a.child, threads, a.methods or list_methods(), not a.no_evidence)
        atomic_write_json(OUT / f"{a.child}.json", res)
        return
    for v in a.variants:
        threads, env = VARIANTS[v]
        cmd = [sys.executable, __file__, "--child", v] + (["--methods", *a.methods] if a.methods else []) + \
              (["--no-evidence"] if a.no_evidence else [])
        subprocess.run(cmd, env={**os.environ, **env, "OMP_NUM_THREADS": str(threads)}, check=True)


if __name__ == "__main__":
    main()
