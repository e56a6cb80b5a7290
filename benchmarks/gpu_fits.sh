#!/usr/bin/env bash
# CUDA checks in one go, each timed and kept going on failure; prints a summary table at the end.
#
#   bash benchmarks/gpu_fits.sh [log_dir]      (default: gpu_fits_logs)
#
# 1. benchmarks/gpu_check.py: tokens/s and peak memory of a ~150M Llama, bf16-mixed and nf4 + LoRA,
#    at batch 8 and 64
# 2. the quickstart's NPO run (StabilityGap, RelearningProbe, TradeOffCurves) in bf16-mixed
# 3. NPO + GradientProjection in 16-mixed (the projection sees the unscaled gradients)
# 4. GradDiff under FSDP (configs/strategies/fsdp.yaml, every GPU), saved, then `lit-unlearn test`
#    on the saved model
# Fits 2-4 use the embedded benchmark's tiny preset; its models are built on first use.
# ACCEL=cpu runs 2 on the CPU (3 and 4 need CUDA): a dry run of the command lines.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-gpu_fits_logs}
ACCEL=${ACCEL:-gpu}
mkdir -p "$LOGS"
RUNS=$(mktemp -d)
TINY=(--config configs/data/fictitious_tiny.yaml --trainer.accelerator "$ACCEL" --trainer.default_root_dir "$RUNS"
      --trainer.enable_progress_bar false)
SUMMARY=()

step() {  # step NAME COMMAND...: run, log to $LOGS/NAME.log, record rc and seconds
  local name=$1; shift
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  SUMMARY+=("| $name | $rc | $((SECONDS - start)) |")
  tail -n 25 "$LOGS/$name.log"
}

python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__,
      'transformers', transformers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
if [ "$ACCEL" = gpu ]; then
  step gpu_check python3 benchmarks/gpu_check.py --steps 30
  step gpu_check_b64 python3 benchmarks/gpu_check.py --steps 30 --batch-size 64
fi
step bf16_quickstart python3 -m lit_unlearn fit --config configs/quickstart.yaml "${TINY[@]}" \
  --trainer.precision bf16-mixed
if [ "$ACCEL" = gpu ]; then
  step fp16_gu_npo python3 -m lit_unlearn fit --config configs/methods/gu_npo.yaml "${TINY[@]}" \
    --trainer.precision 16-mixed --trainer.max_epochs 5
  step fsdp_grad_diff python3 -m lit_unlearn fit --config configs/methods/grad_diff.yaml \
    --config configs/strategies/fsdp.yaml "${TINY[@]}" --trainer.max_epochs 5 \
    --save_pretrained.dirpath "$RUNS/fsdp_model"
  step fsdp_saved_test python3 -m lit_unlearn test --config configs/data/fictitious_tiny.yaml \
    --model "$RUNS/fsdp_model" --trainer.accelerator gpu --trainer.devices 1 \
    --trainer.default_root_dir "$RUNS" --trainer.enable_progress_bar false
fi
echo
echo "| step | exit code | seconds |"
echo "|---|---|---|"
printf '%s\n' "${SUMMARY[@]}"
