#!/usr/bin/env bash
# The full-scale runs still to make on two CPU cores, in order, in two lanes (one thread each).
#
#   bash scripts/full_scale_queue.sh          # start both lanes in the background; logs in runs/logs/
#   bash scripts/full_scale_queue.sh status   # where each run stands
#
# Every run resumes from its checkpoint in runs/full_scale/ (copied there from results/checkpoints/,
# where a session commits the checkpoints of unfinished runs) and a finished run is only scored
# again, so the queue can be started again at any time: it continues where it stopped. Results
# go to runs/out/<script>-<lane>.json; merge them into results/ with
# scripts/merge_results.py when a run has finished.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 METABOOK_MIRROR="${METABOOK_MIRROR:-$(cd ../shared/data 2>/dev/null && pwd)}"
mkdir -p runs/full_scale runs/logs runs/out
mkdir -p runs/full_scale_meta_rl runs/full_scale_in_context runs/full_scale_mldg
for checkpoint in results/checkpoints/*.pt; do  # each script's checkpoints go where that script looks
    case "$(basename "$checkpoint")" in
        maml-nav-*) cp -n "$checkpoint" runs/full_scale_meta_rl/ ;;
        in-context-*) cp -n "$checkpoint" runs/full_scale_in_context/ ;;
        erm-*|mldg-*) cp -n "$checkpoint" runs/full_scale_mldg/ ;;
        *) cp -n "$checkpoint" runs/full_scale/ ;;
    esac
done

PY=.venv/bin/python
COMMON=(--device cpu --no-progress)

# Finished and merged into results/ (a finished run would only be scored again, so they are left out):
# the in-context noiseless, noisy, sinusoid and lsa runs and the Omniglot run's seed 0, MAML (both step sizes),
# first-order MAML (both), Reptile (1-shot, and its network scored at 5 shots as reptile-5way-5shot), ANIL,
# Meta-SGD, ProtoNets 1-shot and 5-shot (float32, and 1-shot with bf16, on metabook's split and on the authors'
# split files), every meta-RL run, R2-D2 and LR-D2 Omniglot 5-way 1-shot (results/r2d2.json), and the whole
# MLDG table (results/mldg.json: ERM, MLDG and first-order MLDG, three seeds at each of six held-out rotations),
# and R2-D2 5-way 5-shot (shipped as r2d2-omniglot-5w5s).
# protonet-snell-enc (Snell et al.'s max-pooling encoder) and protonet-lake finished on an AMD EPYC, and the
# in-context Omniglot run's seed 1 too. maml-20way-1shot resumes from its committed checkpoint (step 805 of 10,000).
lane_a() {
    $PY scripts/full_scale_gradient.py --runs maml-20way-1shot "${COMMON[@]}" --output runs/out/gradient-a.json
}

lane_b() {
    $PY scripts/full_scale_closed_form.py --runs r2d2-omniglot-20way-1shot "${COMMON[@]}" --output runs/out/closed_form-b.json
    # The in-context transformer on Omniglot, seed 2 (seeds 0 and 1 are kept from the copy of results/in_context.json;
    # seed 1's network ships as in-context-omniglot-5w1s).
    cp -n results/in_context.json runs/out/in_context-b.json
    $PY scripts/full_scale_in_context.py --runs omniglot --seeds 3 "${COMMON[@]}" --output runs/out/in_context-b.json
}

if [ "${1:-}" = status ]; then
    for checkpoint in runs/full_scale/*.pt runs/full_scale_in_context/*.pt runs/full_scale_mldg/*.pt; do
        $PY - "$checkpoint" <<'PY'
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print(f"{sys.argv[1]}: step {state['step']} of {state['config']['steps']}, {state['wall_time_s'] / 60:.0f} min")
PY
    done
    exit 0
fi
nohup bash -c "$(declare -f lane_a); PY=$PY; COMMON=(${COMMON[*]}); lane_a" > runs/logs/lane-a.log 2>&1 &
nohup bash -c "$(declare -f lane_b); PY=$PY; COMMON=(${COMMON[*]}); lane_b" > runs/logs/lane-b.log 2>&1 &
echo "two lanes started: tail -f runs/logs/lane-a.log runs/logs/lane-b.log"
