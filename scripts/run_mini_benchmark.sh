#!/usr/bin/env bash
# Every committed mini-VTAB run, in the order they depend on each other; finished runs are skipped, interrupted
# ones resume, so the script can be stopped and started again at will.
#   tune       learning rates on val200 (train800 -> val200) for each method, on mini_mnist and mini_dsprites_loc;
#              then put the choices (python -c "from shiplib.report import lr_grid, selected_lr; ...") into
#              shiplib/resources/mini_defaults.csv (tests/test_results_committed.py checks that they agree)
#   grid       7 methods x 7 tasks x seeds 1-3 with those defaults (final protocol: train800val200 -> test)
#   ablations  SHIP's variants (shiplib.report.ABLATION_VARIANTS) on their tasks, seeds 1-3
#   pilot      the budget pilot of the "scaled" protocol (the official schedule's shape: lr_schedule=scaled, 10 %
#              warm-up): SHIP and VPT-deep, lr 0.1 and 0.3, on one task per group (train800 -> val200), 10, 20
#              and 40 epochs, evaluated at every tenth of training; tag pilot-e<epochs>-lr<lr>
# Usage: scripts/run_mini_benchmark.sh tune|grid|ablations|pilot [results dir] [runs dir]
# On 2 CPU cores: tune about 30 min, grid about 1.5 h, ablations about 3 h (252 runs; two at a time, 1 thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
stage=${1:?"give a stage: tune, grid, ablations or pilot"}
results=${2:-results}
runs=${3:-runs}
common=(--launcher local --jobs 2 --threads 1 --results "$results" --runs "$runs")
METHODS=(linear full vpt_shallow vpt_deep spt sep ship)

lr_grid() {  # the learning rates tried per method
    case $1 in
        full) echo "1e-4 3e-4 1e-3 3e-3" ;;
        spt) echo "1e-2 1e-1 3e-1 1e0" ;;
        linear | ship) echo "1e-3 1e-2 1e-1 3e-1 1e0" ;;  # 3e-1 won on the shorter grid: one step further
        *) echo "1e-3 1e-2 1e-1 3e-1" ;;
    esac
}

case $stage in
    tune)
        for method in "${METHODS[@]}"; do
            for lr in $(lr_grid "$method"); do
                "$PYTHON" -m shiplib sweep --tasks mini_mnist mini_dsprites_loc --methods "$method" --protocol tune \
                    --tag "lr$lr" --set "lr=$lr" "${common[@]}"
            done
        done ;;
    grid)
        "$PYTHON" -m shiplib sweep --tasks mini --methods "${METHODS[@]}" --seeds 1-3 "${common[@]}" ;;
    ablations)
        "$PYTHON" -c "from shiplib.report import sweep_commands; print('\n'.join(sweep_commands(seeds=[1, 2, 3])))" |
            while read -r cmd; do
                # each line is "python -m shiplib sweep ..."; run it with this interpreter and the shared flags
                "$PYTHON" ${cmd#python } "${common[@]}" < /dev/null
            done ;;
    pilot)
        for epochs in 10 20 40; do
            for lr in 1e-1 3e-1; do
                "$PYTHON" -m shiplib sweep --tasks mini_mnist mini_ihc_hema mini_dsprites_loc --methods ship vpt_deep \
                    --protocol tune --tag "pilot-e$epochs-lr$lr" --epochs "$epochs" --set "lr=$lr" \
                    --set lr_schedule=scaled --set "warmup_epochs=$((epochs / 10))" --set "eval_every=$((epochs / 10))" \
                    "${common[@]}"
            done
        done ;;
    *) echo "unknown stage '$stage': give tune, grid, ablations or pilot" >&2; exit 2 ;;
esac
