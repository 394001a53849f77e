#!/usr/bin/env bash
# GPU check (issue 25, item 7): on a machine with an NVIDIA GPU, from the repository root,
#   scripts/gpu_check.sh [--dry-run] [--skip-install] [--out DIR]
# 1. installs the CUDA lock (pip install -c requirements-cuda.lock -e ".[test]");
# 2. checks that torch sees a CUDA device (stops with a clear error otherwise);
# 3. runs the bench on the GPU (python -m twoclocks.bench --device cuda);
# 4. runs the paper study with device cuda (snakemake --config device=cuda) in its own directory
#    and times it: the whole DAG, and the train jobs from their Snakemake benchmark files;
# 5. runs the GPU tests (tests/test_gpu.py -m gpu): a stacked member equals the member alone,
#    two runs agree, a run resumed after SIGTERM equals an uninterrupted one, all bitwise;
# 6. prints the figures (and writes them to DIR/summary.json) for docs/performance.md and README.
# --dry-run prints the steps without running them (no GPU needed). Default DIR: gpu_check/<UTC>.
set -euo pipefail

DRY=0
INSTALL=1
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --skip-install) INSTALL=0 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}"
PY="${PYTHON:-python}"

step() {  # step "what" cmd args...: print it; run it unless --dry-run
    local what="$1"; shift
    printf '\n== %s\n$ %s\n' "$what" "$*"
    if [[ $DRY -eq 0 ]]; then "$@"; fi
}

fail() { echo "gpu_check: $*" >&2; exit 1; }

check_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 \
        || fail "no NVIDIA GPU here: nvidia-smi not found. Run this on a machine with a CUDA GPU."
    nvidia-smi -L >/dev/null 2>&1 \
        || fail "nvidia-smi finds no GPU (driver not loaded?): $(nvidia-smi -L 2>&1 | head -1)"
}

check_torch_cuda() {
    "$PY" - <<'EOF' || fail "torch cannot use the GPU (see above); reinstall with the CUDA lock"
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA device")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF
}

echo "gpu_check: results in $OUT$([[ $DRY -eq 1 ]] && echo ' (dry run: nothing is executed)')"
if [[ $DRY -eq 0 ]]; then
    check_gpu
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    mkdir -p "$OUT"
fi

if [[ $INSTALL -eq 1 ]]; then
    step "install the CUDA lock" "$PY" -m pip install -c requirements-cuda.lock -e ".[test]"
fi
step "torch sees the GPU" check_torch_cuda
step "bench on the GPU" "$PY" -m twoclocks.bench --device cuda --repeats 2 \
    --output "$OUT/bench-cuda.json"

study_run() {
    local t0 t1
    mkdir -p "$OUT/study/results/paper"
    # the study's ETA line (twoclocks.eta) prices member-steps with this machine's GPU bench
    cp "$OUT/bench-cuda.json" "$OUT/study/results/paper/bench.json"
    t0=$(date +%s.%N)
    snakemake --cores all --configfile "$ROOT/config/paper.yaml" --config device=cuda \
        --directory "$OUT/study" > "$OUT/study.log" 2>&1 \
        || { tail -40 "$OUT/study.log" >&2; fail "paper study on cuda failed ($OUT/study.log)"; }
    t1=$(date +%s.%N)
    echo "$t0 $t1" > "$OUT/study_wall.txt"
}
step "paper study with device cuda" study_run
TESTS_OK=1
gpu_tests() {  # a failure is a finding: the figures are still printed, the exit status says it
    "$PY" -m pytest tests/test_gpu.py -m gpu -q -rs --junitxml "$OUT/gpu_tests.xml" || TESTS_OK=0
}
step "GPU tests (stacked = alone, resume = uninterrupted): pytest tests/test_gpu.py -m gpu" \
    gpu_tests

summary() {
    "$PY" - "$OUT" <<'EOF'
import csv, json, sys
from pathlib import Path

out = Path(sys.argv[1])
bench = json.loads((out / "bench-cuda.json").read_text())
t0, t1 = map(float, (out / "study_wall.txt").read_text().split())
train = sorted((out / "study").glob("results/*/benchmarks/train/**/*.tsv"))
train_s = [float(next(csv.DictReader(p.open(), delimiter="\t"))["s"]) for p in train]
tests = (out / "gpu_tests.xml").read_text()
figures = {
    "gpu": bench["machine"].get("gpu_name"),
    "torch": bench.get("torch_version"),
    "speedup_per_member_vs_reference": bench.get("speedup_per_member"),
    "mfu": bench.get("mfu"),
    "mfu_executed": bench.get("mfu_executed"),
    "metrics_write_share": bench.get("metrics_write_share"),
    "engine_per_member_step_s": bench["engine"]["per_member_step_s"],
    "reference_per_member_step_s": bench["reference"]["per_member_step_s"],
    "stacking_per_member_ratio": bench.get("stacking_per_member_ratio"),
    "paper_study_wall_s": t1 - t0,
    "paper_train_jobs": len(train_s),
    "paper_train_jobs_sum_s": sum(train_s),
    "paper_train_longest_job_s": max(train_s, default=None),
    "gpu_tests_failures": tests.count("<failure") + tests.count("<error"),
}
(out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
for k, v in figures.items():
    print(f"{k:40s} {v}")
print("targets: paper grid <= 60 s on one H100/H200; >= 20x the sequential reference per member")
EOF
}
step "figures" summary
if [[ $TESTS_OK -eq 0 ]]; then
    fail "GPU tests failed: see the pytest output above and $OUT/gpu_tests.xml"
fi
