#!/usr/bin/env bash
# GPU check, under 8 minutes on one GPU: the CUDA tests of every blur mode (fp32/fp16/bf16), then the
# benchmark zoo vs official vs timm vs torchvision (inference and training step, fp32 and bf16 autocast,
# NCHW and channels_last, batch 32/64, 224 px). Everything is written under one folder:
#   scripts/gpu_check.sh [OUT_DIR]      (default: gpu_results; $OUT/gpu_results when $OUT is set)
# OUT_DIR/cuda_tests.txt, OUT_DIR/nvidia-smi.txt and OUT_DIR/bench/benchmark.{md,json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:+$OUT/}gpu_results}"
py="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
"$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device visible')"
(nvidia-smi || true) > "$out/nvidia-smi.txt" 2>&1
start=$(date +%s)
status=0
ZOO_REQUIRE_CUDA=1 timeout 200 "$py" -m pytest -q -p no:cacheprovider -rs -m cuda tests/layers/test_blur_cuda.py \
  2>&1 | tee "$out/cuda_tests.txt" || status=$?
echo "CUDA tests: exit ${status}, $(( $(date +%s) - start )) s" | tee -a "$out/cuda_tests.txt"
timeout 260 "$py" scripts/benchmark.py --device cuda --precision fp32 bf16 --batch-sizes 32 64 \
  --train-batch-sizes 32 64 --image-size 224 --repeats 8 --layer-repeats 15 --threads 8 --out "$out/bench" \
  2>&1 | tail -n 200 > "$out/bench_log.txt" || status=$?
echo "total $(( $(date +%s) - start )) s, exit ${status}; tables in $out/bench/benchmark.md" | tee -a "$out/cuda_tests.txt"
exit "$status"
