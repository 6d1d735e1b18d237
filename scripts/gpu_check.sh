#!/usr/bin/env bash
# The GPU check: one command, run from anywhere on an offline CUDA machine, under 8 minutes.
#
# Usage: scripts/gpu_check.sh [OUT_DIR]        OUT_DIR defaults to $OUT, else ./gpu_check_out
#        DRY_RUN=1 scripts/gpu_check.sh         print the commands, run nothing
#
# Beforehand, on a connected machine: scripts/gpu_wheels.sh (fills .whl/ with what the image
# lacks). Then, in the repository root on the GPU machine:
#   bash scripts/gpu_check.sh "$OUT"
# Steps, each under `timeout` and logged to OUT_DIR/<step>.log:
#   wheels   install .whl/*.whl into $SITE (default /tmp/site) and put it and the repository on
#            PYTHONPATH (the project itself is not pip-installed)
#   nvidia_smi, versions
#            nvidia-smi; python / torch / CUDA / triton / flash-attn versions
#   pytest   python3 -m pytest -m gpu on the test files that hold GPU tests
#   mfu_sdpa, mfu_flex
#            scripts/bench_mfu.py on neuroformer_base, CUDA, bf16-mixed, one per attention
#            backend (attention dropout 0, which FlexAttention needs; same for both)
# then OUT_DIR/summary.json: each step's exit status and seconds, the test counts and the MFU
# figures. A failed step does not stop the later ones; the script exits 1 if any step failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${1:-${OUT:-$ROOT/gpu_check_out}}"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/.whl}"
SITE="${SITE:-/tmp/site}"
DRY_RUN="${DRY_RUN:-0}"
BUDGET_S="${BUDGET_S:-460}"  # all steps together; each step's timeout is cut to what is left
BENCH_ARGS=(--device cuda --precision bf16-mixed --attn-dropout 0 --batch 32 --warmup 2 --steps 10 --json)

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
STEPS_TSV="$OUT_DIR/steps.tsv"
: > "$STEPS_TSV"
export NEUROFOUND_CACHE="${NEUROFOUND_CACHE:-/tmp/neurofound-cache}"
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
deadline=$((SECONDS + BUDGET_S))

# step NAME TIMEOUT_S STDOUT_FILE CMD...: run CMD under timeout, stdout to STDOUT_FILE (or the
# log when empty), stderr to OUT_DIR/NAME.log; record NAME, exit status, seconds.
step() {
    local name="$1" limit="$2" stdout="$3"
    shift 3
    local log="$OUT_DIR/$name.log"
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '+ %s:' "$name"; printf ' %q' "$@"; echo
        return 0
    fi
    local left=$((deadline - SECONDS))
    ((left < limit)) && limit=$left
    if ((limit <= 0)); then
        echo "== $name: skipped, no time left" | tee "$log"
        printf '%s\t%s\t%s\n' "$name" skipped 0 >> "$STEPS_TSV"
        return 0
    fi
    echo "== $name (timeout ${limit}s)"
    local start=$SECONDS rc
    if [[ -n "$stdout" ]]; then
        timeout --kill-after=10 "$limit" "$@" > "$stdout" 2> "$log"
    else
        timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    fi
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - start)) >> "$STEPS_TSV"
    echo "   exit $rc after $((SECONDS - start))s; log $log"
    tail -n 5 "$log" | sed 's/^/   | /'
}

# 1. wheels: the pure-Python packages the image lacks, without the network.
shopt -s nullglob
wheels=("$WHEEL_DIR"/*.whl)
if ((${#wheels[@]})); then
    step wheels 120 "" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "${wheels[@]}"
    if [[ "$DRY_RUN" != 1 ]] && ! PYTHONPATH="$SITE" python3 -c 'import pytest' 2> /dev/null; then
        # No pip on the image: a pure-Python wheel is a zip of its import tree.
        mkdir -p "$SITE"
        for w in "${wheels[@]}"; do python3 -m zipfile -e "$w" "$SITE"; done
    fi
else
    echo "== wheels: none in $WHEEL_DIR (run scripts/gpu_wheels.sh on a connected machine)"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# 2. the machine
step nvidia_smi 30 "" nvidia-smi
VERSIONS_PY='
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
for name in ("triton", "flash_attn", "einops", "lightning", "pytest", "hydra", "omegaconf"):
    try:
        print(name, __import__(name).__version__)
    except Exception as e:
        print(name, "unavailable:", type(e).__name__, e)
from neurofound.nn.attention import available_backends
print("attention backends on cuda:", available_backends("cuda"))
'
step versions 60 "" python3 -c "$VERSIONS_PY"

# 3. the GPU tests. Only the files that hold them are collected: collecting the whole suite
# would import packages this image lacks (pynwb, mne, brian2, ...).
mapfile -t gpu_test_files < <(grep -rlE --include='test_*.py' 'pytest\.mark\.gpu' tests | sort)
pytest_args=(-m gpu -q -p no:cacheprovider -rA --durations=15 --junitxml="$OUT_DIR/pytest_gpu.xml")
if python3 -c 'import pytest_timeout' 2> /dev/null; then
    pytest_args+=(--timeout=180)
fi
step pytest 180 "" python3 -m pytest "${pytest_args[@]}" "${gpu_test_files[@]}"

# 4. training-step MFU, one run per attention backend.
# flex gets longer: its warm-up steps compile FlexAttention forward and backward.
step mfu_sdpa 90 "$OUT_DIR/mfu_sdpa.json" python3 scripts/bench_mfu.py --backend sdpa "${BENCH_ARGS[@]}"
step mfu_flex 150 "$OUT_DIR/mfu_flex.json" python3 scripts/bench_mfu.py --backend flex "${BENCH_ARGS[@]}"

[[ "$DRY_RUN" == 1 ]] && exit 0

# 5. the summary
python3 - "$OUT_DIR" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
summary = {"steps": {}, "pytest": None, "mfu": {}}
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    summary["steps"][name] = {"exit": int(rc) if rc.lstrip("-").isdigit() else rc,
                              "seconds": int(seconds), "log": f"{name}.log"}
xml = out / "pytest_gpu.xml"
if xml.exists():
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    summary["pytest"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary["pytest"]["failed"] = [
        f'{case.get("classname")}::{case.get("name")}' for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None]
for path in sorted(out.glob("mfu_*.json")):
    backend = path.stem.removeprefix("mfu_")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    try:
        r = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        summary["mfu"][backend] = None
        continue
    keys = ("attention_backend_resolved", "precision", "device_name", "batch", "mfu", "mfu_with_optimizer",
            "seconds_per_step", "warmup_seconds", "achieved_flops", "peak_flops", "loss", "torch")
    summary["mfu"][backend] = {k: r.get(k) for k in keys}
summary["ok"] = all(s["exit"] == 0 for s in summary["steps"].values())
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["ok"] else 1)
EOF
