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
#   tune-tasks per-task learning rates of the scaled protocol at $BUDGET epochs (default 20, the pilot's choice)
#              for every method on every mini task (train800 -> val200; tag tune-e<budget>-lr<lr>): in rounds,
#              each asking shiplib.report.tuning which runs the choice still needs (the next rung beyond a best lr at
#              the end of the lrs tried; a second seed where the top two lie within 2 points), SHIP and VPT-deep first;
#              TUNE_METHODS="ship vpt_deep" limits the search to those methods
#   scaled     the scaled protocol end to end at $BUDGET epochs: the per-task lr search of tune-tasks, and the final
#              runs (train800val200 -> test, seeds 1-3, tag scaled-e<budget>) of each (method, task) as soon as its
#              lr is settled (shiplib.report.tuning.final_commands); when both are done, SHIP's component and
#              decoupled-attention scale ablations at SHIP's lr per task (ablation_commands; tags
#              <variant>.scaled-e<budget>)
# Usage: scripts/run_mini_benchmark.sh tune|grid|ablations|pilot|tune-tasks|scaled [results dir] [runs dir]
# On 2 CPU cores: tune about 30 min, grid about 1.5 h, ablations about 3 h (252 runs; two at a time, 1 thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
stage=${1:?"give a stage: tune, grid, ablations, pilot, tune-tasks or scaled"}
results=${2:-results}
runs=${3:-runs}
common=(--launcher local --jobs 2 --threads 1 --results "$results" --runs "$runs")
METHODS=(linear full vpt_shallow vpt_deep spt sep ship)
MINI_TASKS=(mini_mnist mini_ihc_hema mini_dsprites_loc mini_textures mini_ihc_dab mini_dsprites_ori mini_clevr_count)

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
        "$PYTHON" -c "from shiplib.launch.ablations import sweep_commands; print('\n'.join(sweep_commands(seeds=[1, 2, 3])))" |
            while read -r cmd; do
                # each line is "python -m shiplib sweep ..."; run it with this interpreter and the shared flags
                "$PYTHON" ${cmd#python } "${common[@]}" < /dev/null
            done ;;
    pilot)
        for epochs in 10 20 40; do
            # the scaled protocol's settings, from the one definition the per-task study reads them from
            mapfile -t scaled < <("$PYTHON" -c "import sys; from shiplib.report.tuning import scaled_protocol
print('\n'.join(f'--set={s}' for s in scaled_protocol(int(sys.argv[1]))))" "$epochs")
            for lr in 1e-1 3e-1; do
                "$PYTHON" -m shiplib sweep --tasks mini_mnist mini_ihc_hema mini_dsprites_loc --methods ship vpt_deep \
                    --protocol tune --tag "pilot-e$epochs-lr$lr" --epochs "$epochs" --set "lr=$lr" "${scaled[@]}" \
                    "${common[@]}"
            done
        done ;;
    tune-tasks | scaled)
        budget=${BUDGET:-20}
        tune_methods=${TUNE_METHODS:-ship vpt_deep linear full vpt_shallow spt sep}  # SHIP and VPT-deep first
        wanted="tuning_commands(r, b, t, m)"  # tune-tasks: the per-task lr search only
        # scaled: also the final runs of each settled (method, task); once none is left, SHIP's ablations
        [ "$stage" = scaled ] && wanted="(tuning_commands(r, b, t, m) + final_commands(r, b, t, m))
    or (ablation_commands(r, b) if 'ship' in m else [])"
        for round in $(seq 1 40); do  # each round settles at least one rung or finishes final runs
            # one command per line, and no line at all once nothing is left
            mapfile -t todo < <("$PYTHON" -c "import sys; from shiplib.report.tuning import ablation_commands, final_commands, tuning_commands
r, b, t, m = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
sys.stdout.write(''.join(c + '\n' for c in $wanted))" "$results" "$budget" "${MINI_TASKS[*]}" "$tune_methods")
            if [ ${#todo[@]} -eq 0 ]; then echo "$stage: every method and task settled"; break; fi
            echo "$stage round $round: ${#todo[@]} runs"
            # two runs at once, one thread each; a run that is already finished or running elsewhere is skipped
            printf '%s\n' "${todo[@]}" | xargs -P 2 -L 1 "$PYTHON" -m shiplib run --threads 1 --no-progress \
                --results "$results" --runs "$runs"
        done ;;
    *) echo "unknown stage '$stage': give tune, grid, ablations, pilot, tune-tasks or scaled" >&2; exit 2 ;;
esac
