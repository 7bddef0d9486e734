#!/usr/bin/env bash
# One lent GPU session, in three steps (CONTRIBUTING.md, "On a lent GPU"):
#
#   bash scripts/gpu_session.sh prepare          # here, on the CPU machine: builds .gpu/ (data caches, commit)
#   bash scripts/gpu_session.sh run [BUDGET_S]   # on the device, from the repository root, in ONE call
#   bash scripts/gpu_session.sh collect DIR      # here again: fold the files the device returned into the repo
#
# prepare: .gpu/data holds what the full-scale scripts load, made by metabook's
#   own loaders (METABOOK_MIRROR, default ../shared/data; METABOOK_DATA=.gpu/data),
#   so that they work on a machine with neither the mirror nor a network:
#   omniglot/omniglot-28px-lanczos-v1.pt (every Omniglot split, 28 px),
#   omniglot/all_runs/ (Lake et al.'s 20 one-shot runs, for protonet-lake) and
#   downloads/mnist/*.gz (the MNIST test set, for Rotated MNIST). The unpacked
#   Omniglot images are deleted once the cache file exists. .gpu/commit holds
#   "<git HEAD> clean|dirty", which the device passes on as METABOOK_COMMIT
#   (metabook_learn.checkpoint.provenance reads it where there is no .git).
#
# run: each step under `timeout` for what is left of BUDGET_S (default 420),
#   none started with fewer than 30 s left: nvidia-smi and torch's view of the
#   device, benchmarks/meta_step.py (180 s at most), then the full-scale scripts (gradient-based
#   MAML 5-way first, the other gradient-based runs, MLDG, Prototypical
#   Networks, the Omniglot runs of the closed-form script; no mini-ImageNet or
#   CIFAR-FS, which are not on the device), each with its default results file
#   (the runs already in it are kept) and checkpoints under runs/ (unfinished
#   runs resume in the next session). A step is stopped with SIGINT (Python
#   cleans up) and killed 10 s later if still running. At the end, even after a
#   failure, $OUT receives at most 8 files: session.log (everything printed),
#   meta_step_gpu.txt, every results/*.json that changed, and runs.tar.gz (the
#   files under runs/ written during the session; split into runs.tar.gz.part-NN
#   pieces of 15 MiB when larger than 16 MiB).
#
# collect: copies DIR's *.json over results/, meta_step_gpu.txt to
#   benchmarks/results/, unpacks the runs tarball into runs/, prints git status.
#
# Environment: PYTHON (default python3 for run; .venv/bin/python, if there, for
# prepare and collect); GPU_SESSION_DRY=1 makes `run` print its plan (every
# command with its timeout) and run nothing; GPU_SESSION_ALLOW_CPU=1 lets `run`
# start the full-scale scripts without a GPU (tests only: they would take days).
set -uo pipefail

MIN_STEP_S=30      # no step starts with less than this left
BENCHMARK_MAX_S=180  # the benchmark never takes more than this: the budget is for the full-scale runs
KILL_GRACE_S=10    # after SIGINT, SIGKILL this much later
RESERVE_S=15       # kept at the end for collecting the files
MAX_FILE_BYTES=$((16 * 1024 * 1024))
PART_BYTES=$((15 * 1024 * 1024))
MAX_FILES=8
MAX_GPU_DIR_BYTES=$((40 * 1024 * 1024))
MAX_TRAVEL_BYTES=$((64 * 1024 * 1024))
# full_scale_gradient.py's runs, MAML 5-way 1-shot first (the headline target); tests/test_gpu_session.py
# checks that these are all of the script's runs.
GRADIENT_FIRST="maml-5way-1shot"
GRADIENT_REST="maml-5way-1shot-alpha0.4 maml-20way-1shot fomaml-5way-1shot fomaml-5way-1shot-alpha0.4 reptile-5way-1shot reptile-5way-5shot anil-5way-1shot metasgd-5way-1shot"
# full_scale_closed_form.py's Omniglot runs (CIFAR-FS needs CIFAR-100, which the device does not have);
# checked by the same test.
CLOSED_FORM_OMNIGLOT="r2d2-omniglot-5way-1shot r2d2-omniglot-5way-5shot r2d2-omniglot-20way-1shot lrd2-omniglot-5way-1shot"

usage() {
    cat >&2 <<'EOF'
usage: bash scripts/gpu_session.sh prepare          # here: build .gpu/ (data caches, commit)
       bash scripts/gpu_session.sh run [BUDGET_S]   # on the device (default budget 420 s; $OUT must be set)
       bash scripts/gpu_session.sh collect DIR      # here: fold the device's files into the repository
EOF
    exit 2
}

die() { echo "gpu_session: $*" >&2; exit 1; }

cd "$(dirname "$0")/.." || die "cannot enter the repository root"

local_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    elif [ -x .venv/bin/python ]; then echo .venv/bin/python
    else echo python3; fi
}

# ── prepare ──────────────────────────────────────────────────────────────────

prepare() {
    local python mirror bytes tree runs travel commit state
    python=$(local_python)
    mirror=${METABOOK_MIRROR:-../shared/data}
    [ -d "$mirror" ] || die "no data mirror at $mirror (set METABOOK_MIRROR)"
    mkdir -p .gpu/data || die "cannot create .gpu/data"

    echo "== data caches in .gpu/data (mirror: $mirror)"
    PYTHONPATH=$PWD METABOOK_DATA=.gpu/data METABOOK_MIRROR=$mirror "$python" - <<'EOF' || die "building the data caches failed"
import shutil

from metabook_learn.data.omniglot import load_omniglot_characters
from metabook_learn.data.omniglot_runs import load_omniglot_runs
from metabook_learn.data.rotated_mnist import MNIST_TEST_FILES
from metabook_learn.data.storage import atomic_output, cache_dir, fetch

load_omniglot_characters()          # -> omniglot/omniglot-28px-lanczos-v1.pt, every split of load_omniglot
load_omniglot_runs(image_size=28)   # -> omniglot/all_runs/ (protonet-lake)
for upstream in MNIST_TEST_FILES.values():  # Rotated MNIST has no cache file: it reads these archives
    source = fetch(upstream)        # the mirror's copy, read in place
    target = cache_dir() / "downloads" / upstream.dataset / upstream.filename
    if source.resolve() != target.resolve():
        with atomic_output(target) as temporary:
            shutil.copyfile(source, temporary)
print("built")
EOF
    rm -rf .gpu/data/omniglot/images_background .gpu/data/omniglot/images_evaluation

    echo "== checking that .gpu/data alone suffices (no mirror, no download)"
    env -u METABOOK_MIRROR PYTHONPATH="$PWD" METABOOK_DATA=.gpu/data "$python" - <<'EOF' || die "loading from .gpu/data alone failed"
from metabook_learn.data.omniglot import OMNIGLOT_SPLITS, load_omniglot
from metabook_learn.data.omniglot_runs import load_omniglot_runs
from metabook_learn.data.rotated_mnist import load_rotated_mnist

for split in OMNIGLOT_SPLITS:
    print(f"omniglot {split}: {load_omniglot(split, allow_download=False).num_classes} classes")
print(f"omniglot runs: {len(load_omniglot_runs(image_size=28, allow_download=False))}")
print(f"rotated mnist: {tuple(load_rotated_mnist(allow_download=False).images.shape)}")
EOF

    commit=$(git rev-parse HEAD) || die "not a git checkout"
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then state=dirty; else state=clean; fi
    echo "$commit $state" > .gpu/commit
    echo "== .gpu/commit: $(cat .gpu/commit)"
    [ "$state" = clean ] || echo "   (uncommitted changes travel with the working tree; results will say git_dirty)"

    bytes=$(du -sb .gpu | cut -f1)
    echo "== .gpu/: $(du -sh .gpu | cut -f1) ($bytes bytes)"
    du -sh .gpu/data/*/* 2>/dev/null | sed 's/^/   /'
    [ "$bytes" -le "$MAX_GPU_DIR_BYTES" ] || die ".gpu/ is larger than 40 MiB"
    # What the device call sends: tracked and untracked-not-ignored files, plus the carried .gpu and runs.
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    runs=$(du -sb runs 2>/dev/null | cut -f1)
    travel=$(( ${tree:-0} + bytes + ${runs:-0} ))
    echo "== the device call will send about $((travel / 1024 / 1024)) MiB (limit 64 MiB) with carry [\".gpu\", \"runs\"]"
    [ "$travel" -le "$MAX_TRAVEL_BYTES" ] || die "the working tree with .gpu and runs exceeds 64 MiB"
}

# ── run ──────────────────────────────────────────────────────────────────────

dry() { [ "${GPU_SESSION_DRY:-0}" = 1 ]; }

STEPS_DONE=()
# step [--max S] LABEL COMMAND...: run COMMAND under timeout for the budget left (at most S seconds),
# or skip it when too little is left.
step() {
    local max=0 label now left limit rc
    if [ "$1" = --max ]; then max=$2; shift 2; fi
    label=$1
    shift
    now=$(date +%s)
    left=$(( END - RESERVE_S - now ))
    if [ "$left" -lt "$MIN_STEP_S" ]; then
        echo "== $label: not started, ${left}s of the budget left (fewer than ${MIN_STEP_S}s)"
        STEPS_DONE+=("$label: not started")
        return 0
    fi
    limit=$(( left - KILL_GRACE_S ))
    if [ "$max" -gt 0 ] && [ "$limit" -gt "$max" ]; then limit=$max; fi
    echo "== $label ($(date -u +%H:%M:%S), ${left}s left)"
    echo "+ timeout -s INT -k $KILL_GRACE_S $limit $*"
    if dry; then
        STEPS_DONE+=("$label: planned")
        return 0
    fi
    timeout -s INT -k "$KILL_GRACE_S" "$limit" "$@"
    rc=$?
    case $rc in
        0) STEPS_DONE+=("$label: ok") ;;
        124|137) STEPS_DONE+=("$label: stopped at its time limit (${limit}s)") ;;
        *) STEPS_DONE+=("$label: failed, exit status $rc"); FAILED=1 ;;
    esac
    echo "== $label: exit status $rc after $(( $(date +%s) - now ))s"
}

# collect_out: the files that go back, at most MAX_FILES in $OUT (session.log is already there).
collect_out() {
    local f name count size parts list
    echo
    echo "== collecting into \$OUT ($(date -u +%H:%M:%S), $(( END - $(date +%s) ))s of the budget left)"
    if dry; then
        echo "would copy: every results/*.json that changed, and runs.tar.gz of the files under runs/ written now"
        return 0
    fi
    find results runs -name '.*.partial-*' -delete 2>/dev/null  # temporary files of a killed write
    for f in results/*.json; do
        [ -f "$f" ] || continue
        if ! grep -qxF "$(md5sum "$f")" "$STATE/results.md5"; then
            cp "$f" "$OUT/" && echo "results: $f changed, copied"
        fi
    done
    list=$STATE/runs-files
    find runs -type f -newer "$STATE/start" ! -name '.*' 2>/dev/null | sort > "$list"
    if [ -s "$list" ]; then
        tar czf "$STATE/runs.tar.gz" -T "$list"
        size=$(stat -c %s "$STATE/runs.tar.gz")
        count=$(find "$OUT" -maxdepth 1 -type f | wc -l)
        echo "runs: $(wc -l < "$list") files written under runs/ ($((size / 1024)) KiB compressed)"
        if [ "$size" -le "$MAX_FILE_BYTES" ] && [ "$count" -lt "$MAX_FILES" ]; then
            mv "$STATE/runs.tar.gz" "$OUT/runs.tar.gz"
        else
            parts=$(( (size + PART_BYTES - 1) / PART_BYTES ))
            if [ $(( count + parts )) -le "$MAX_FILES" ]; then
                split -b "$PART_BYTES" -d "$STATE/runs.tar.gz" "$OUT/runs.tar.gz.part-"
                echo "runs: split into $parts pieces of at most 15 MiB"
            else
                echo "runs: NOT returned: $((size / 1024 / 1024)) MiB needs $parts files and only" \
                     "$(( MAX_FILES - count )) of $MAX_FILES are free; the checkpoints of this session are lost"
            fi
        fi
    else
        echo "runs: nothing written under runs/"
    fi
    echo "== steps:"
    for name in "${STEPS_DONE[@]}"; do echo "   $name"; done
    echo "== files in \$OUT:"
    ls -l "$OUT" | sed 's/^/   /'
    count=$(find "$OUT" -type f | wc -l)
    [ "$count" -le "$MAX_FILES" ] || echo "warning: $count files in \$OUT; only $MAX_FILES come back"
}

session() {
    local python=${PYTHON:-python3} gpu=yes
    export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 METABOOK_DATA=.gpu/data
    unset METABOOK_MIRROR  # the device has no mirror: everything comes from .gpu/data
    if [ -f .gpu/commit ]; then
        METABOOK_COMMIT=$(cat .gpu/commit)
        export METABOOK_COMMIT
    elif dry; then
        echo "warning: no .gpu/commit (dry run: going on)"
    else
        echo "error: no .gpu/commit: run 'bash scripts/gpu_session.sh prepare' here and carry .gpu"
    fi
    echo "== gpu_session run: budget ${BUDGET}s, started $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
    echo "   commit: ${METABOOK_COMMIT:-unknown}; data: $(du -sh .gpu/data 2>/dev/null | cut -f1 || echo none)"
    trap collect_out EXIT
    trap 'exit 130' INT TERM
    [ -d .gpu/data ] || dry || { echo "error: no .gpu/data; nothing to train on"; FAILED=1; return 1; }

    step "nvidia-smi" nvidia-smi
    step "torch" "$python" -c "import torch; print('torch', torch.__version__, '|', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
    if ! dry && ! timeout 60 "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        gpu=no
    fi
    step --max "$BENCHMARK_MAX_S" "meta-step benchmark" "$python" benchmarks/meta_step.py --output "$OUT/meta_step_gpu.txt"
    if [ "$gpu" = no ] && [ "${GPU_SESSION_ALLOW_CPU:-0}" != 1 ]; then
        echo "== no CUDA device: the full-scale scripts are not started (GPU_SESSION_ALLOW_CPU=1 forces them)"
        STEPS_DONE+=("full-scale scripts: not started, no GPU")
        return 0
    fi
    # shellcheck disable=SC2086  # the run lists are meant to split into words
    step "gradient-based: $GRADIENT_FIRST" "$python" scripts/full_scale_gradient.py --no-progress \
        --runs $GRADIENT_FIRST
    # shellcheck disable=SC2086
    step "gradient-based: the other runs" "$python" scripts/full_scale_gradient.py --no-progress \
        --runs $GRADIENT_REST
    step "MLDG" "$python" scripts/full_scale_mldg.py --no-progress
    step "Prototypical Networks" "$python" scripts/full_scale_protonets.py --no-progress
    # shellcheck disable=SC2086
    step "closed-form (Omniglot)" "$python" scripts/full_scale_closed_form.py --no-progress \
        --runs $CLOSED_FORM_OMNIGLOT
}

run() {
    BUDGET=${1:-420}
    [[ "$BUDGET" =~ ^[0-9]+$ ]] || usage
    START=$(date +%s)
    END=$(( START + BUDGET ))
    FAILED=0
    if dry; then
        OUT=${OUT:-'$OUT'}
        session
        return 0
    fi
    [ -n "${OUT:-}" ] && [ -d "$OUT" ] || die "\$OUT must name an existing folder (the device tool sets it)"
    STATE=$(mktemp -d) || die "no temporary folder"
    touch "$STATE/start"
    md5sum results/*.json > "$STATE/results.md5" 2>/dev/null
    # The session runs in a subshell whose EXIT trap collects the files; tee keeps the whole log.
    ( session; exit $FAILED ) 2>&1 | tee "$OUT/session.log"
    local rc=${PIPESTATUS[0]} size
    size=$(stat -c %s "$OUT/session.log")
    if [ "$size" -gt "$MAX_FILE_BYTES" ]; then  # keep the end, where the summary is
        tail -c "$PART_BYTES" "$OUT/session.log" > "$STATE/log" && mv "$STATE/log" "$OUT/session.log"
    fi
    rm -rf "$STATE"
    echo "gpu_session run: ended after $(( $(date +%s) - START ))s of a ${BUDGET}s budget, exit status $rc"
    return "$rc"
}

# ── collect ──────────────────────────────────────────────────────────────────

collect() {
    local dir=${1:-} python f tarball
    [ -n "$dir" ] || usage
    [ -d "$dir" ] || die "no folder $dir"
    python=$(local_python)
    for f in "$dir"/*.json; do
        [ -f "$f" ] || continue
        "$python" -c "import json, sys; json.load(open(sys.argv[1]))" "$f" || die "$f is not valid JSON"
        cp "$f" results/ && echo "results/$(basename "$f") <- $f"
    done
    if [ -f "$dir/meta_step_gpu.txt" ]; then
        cp "$dir/meta_step_gpu.txt" benchmarks/results/ && echo "benchmarks/results/meta_step_gpu.txt <- $dir"
    fi
    tarball=$(mktemp) || die "no temporary file"
    if [ -f "$dir/runs.tar.gz" ]; then
        cp "$dir/runs.tar.gz" "$tarball"
    elif compgen -G "$dir/runs.tar.gz.part-*" > /dev/null; then
        cat "$dir"/runs.tar.gz.part-* > "$tarball"
    else
        echo "no runs tarball in $dir"
        : > "$tarball"
    fi
    if [ -s "$tarball" ]; then
        if tar tzf "$tarball" | grep -qvE '^runs/[^/]' || tar tzf "$tarball" | grep -qE '(^|/)\.\.(/|$)'; then
            rm -f "$tarball"
            die "the runs tarball holds paths outside runs/; not unpacked"
        fi
        tar xzf "$tarball" && echo "runs/: $(tar tzf "$tarball" | grep -vc '/$') files unpacked"
    fi
    rm -f "$tarball"
    [ -f "$dir/session.log" ] && echo "the device's log: $dir/session.log"
    echo "== git status --short"
    git status --short
    echo "Next: re-execute the chapters that read the changed results files"
    echo "(.venv/bin/python scripts/execute_notebooks.py book/X.ipynb), review, commit."
}

case "${1:-}" in
    prepare) [ $# -eq 1 ] || usage; prepare ;;
    run) [ $# -le 2 ] || usage; run "${2:-420}" ;;
    collect) [ $# -eq 2 ] || usage; collect "$2" ;;
    *) usage ;;
esac
