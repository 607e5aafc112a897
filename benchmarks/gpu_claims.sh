#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The full protocol of the image claims (issue 12) on a GPU machine, as one prepared call of at
# most ~9 minutes: `onelip reproduce` caches every finished sub-run under OUT/<claim>/runs/,
# and `--budget` starts no sub-run after the time left, so a call loses at most the sub-run
# that `timeout` cuts off, and the next call (or a CPU run with the same --out) continues from
# there. The last step writes each claim's report from the cache alone (`--budget 0`): a
# sweep cut short is reported on the sub-runs at hand, with the others named as not run.
#
#   benchmarks/gpu_claims.sh DATA OUT [SECONDS]   # DATA: CIFAR-10 as DATA/<class>/*.jpg
#   CLAIMS=pareto benchmarks/gpu_claims.sh DATA OUT 540   # one claim a call (the default:
#                                                         # memorization consistency pareto)
#   SNOWFLAKE=1 ...                                       # the snowflake too (after the others)
#
# Not yet run on a GPU (no device was lent while this was written); tested on CPU with --quick.
set -euo pipefail
data=${1:?usage: gpu_claims.sh DATA OUT [SECONDS]}
out=${2:?usage: gpu_claims.sh DATA OUT [SECONDS]}
budget=${3:-540}
quick=${QUICK:+--quick}
py=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
start=$SECONDS
claims=${CLAIMS:-memorization consistency pareto}
for claim in $claims ${SNOWFLAKE:+snowflake}; do
  case "$claim" in
    memorization|consistency|pareto) args=(--data "folder:$data") ;;
    snowflake) args=() ;;
    *) echo "gpu_claims.sh: unknown claim '$claim' in CLAIMS" >&2; exit 2 ;;
  esac
  left=$((budget - (SECONDS - start)))
  if [ "$left" -le 30 ]; then echo "$claim: not started (time is up)"; continue; fi
  timeout --signal=INT "$left" "$py" -m onelip reproduce "$claim" $quick \
    "${args[@]}" --out "$out" --quiet --budget $((left - 30)) \
    || echo "$claim: stopped after ${left}s (cached sub-runs kept)"
done
for claim in $claims ${SNOWFLAKE:+snowflake}; do  # the reports, from the cache alone
  case "$claim" in snowflake) args=() ;; *) args=(--data "folder:$data") ;; esac
  "$py" -m onelip reproduce "$claim" $quick "${args[@]}" --out "$out" --quiet --budget 0 \
    > /dev/null || echo "$claim: no report"
done
