#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every GPU check of issues 11, 12 and 21 as ONE prepared device call (at most ~9.5 minutes), for a
# session that is lent a GPU (DEVELOPERS.md, "The machine"; 15 minutes of device time in all).
#
# Preparation, on the CPU machine, from the repository root (once per session; the two folders
# are ignored through .git/info/exclude and travel with `carry`):
#   mkdir -p .git/info && printf '/.whl/\n/.cifar/\n' >> .git/info/exclude
#   mkdir -p .cifar && cp ../shared/data/cifar10-jpeg/train.tar.gz .cifar/
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl \
#       orthogonium==0.0.4 deel-torchlip==1.0.5          # the peers (pure-Python wheels)
# The device call:
#   run(command="bash benchmarks/gpu_session.sh", carry=[".cifar", ".whl"], timeout_s=600)
#
# What it runs, each stage time-boxed so that the call ends inside its limit:
#   1. benchmarks/kernel_build.py --device cuda: operations and GPU time of per-layer vs batched
#      kernel builds (issue 11, "GPU speed");                                      ~1 min
#   2. benchmarks/cifar10.py --gpu-checks --device cuda: a training step of each network and of
#      its plain twin at batch 256, the same step of onelip's ConvNet XS and its twin under bf16
#      autocast and torch.compile (issue 21), then onelip's ConvNet XS trained $TRAIN (3 min)
#      and certified (issue 11's GPU targets);                                     ~5 min
#   3. benchmarks/cifar10_hour.py --stage headline --device cuda --headline-amp: the one-hour
#      CPU recipe (the finals' winner, from the cached CPU runs that travel with the checkout)
#      compressed to $HOUR (3 min) of the GPU in bf16, certified on the validation split and
#      attacked, saved as cifar10-hour-cuda (issue 21);                             ~3.5 min
#   4. benchmarks/gpu_claims.sh with the time left: the image claims' full protocols (issue 12;
#      memorization first, cached by sub-run, resumable by a later call).
# Results come back through $OUT (at most 8 files): log, results.tar.gz (everything), and the
# Markdown reports for a first look. The machine's python3 holds a CUDA PyTorch; onelip runs
# from src/ (PYTHONPATH), its other dependencies are on the machine's image.
#
# Not yet run on a GPU (no device was lent while this was written); the same stages were run
# on the CPU with DEVICE=cpu TRAIN=30s STEPS=2 LIMIT=480 (458 s, the protocol end to end, not
# GPU figures; kernel_build was cut at its 90 s on the CPU, memorization at the time left).
set -uo pipefail
start=$SECONDS
limit=${LIMIT:-570}          # seconds for the whole script
device=${DEVICE:-cuda}
train=${TRAIN:-3m}
hour=${HOUR:-3m}
steps=${STEPS:-25}
out=${OUT:-/tmp/onelip-gpu-out}
work=${WORK:-/tmp/onelip-gpu}
py=${PYTHON:-python3}
mkdir -p "$out" "$work/results"
exec > >(tee "$out/log") 2>&1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ONELIP_CACHE="$work/cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "no nvidia-smi"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

if ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .whl/*.whl && export PYTHONPATH="$PYTHONPATH:$work/site"
fi
nets=onelip
if "$py" -c "import orthogonium, deel.torchlip" 2>/dev/null; then
  nets=onelip,orthogonium,deel
else
  echo "peers not importable (no .whl carried): onelip only"
fi
data=${DATA:-}
if [ -z "$data" ]; then
  mkdir -p "$work/cifar" && tar xzf .cifar/train.tar.gz -C "$work/cifar" && data="$work/cifar"
fi
echo "data: $data; $((SECONDS - start)) s so far"

left() { echo $((limit - (SECONDS - start))); }

# 1. kernel builds
timeout --signal=INT 90 "$py" benchmarks/kernel_build.py --device "$device" --threads 1 \
  --rounds 20 --out "$work/results" || echo "kernel_build: stopped"
echo "kernel_build done; $((SECONDS - start)) s so far"

# 2. the CIFAR-10 GPU protocol (onelip's loss: the CPU benchmark's choice, from cifar10.json)
cp benchmarks/results/cifar10.json "$work/results/" 2>/dev/null || true
t=$(( $(left) - 60 )); [ "$t" -gt 420 ] && t=420
timeout --signal=INT "$t" "$py" benchmarks/cifar10.py --data "$data" --device "$device" \
  --gpu-checks --gpu-train "$train" --gpu-steps "$steps" --only "$nets" \
  --out "$work/results" --models "$work/results/models" || echo "cifar10 gpu: stopped"
echo "cifar10 gpu done; $((SECONDS - start)) s so far"

# 3. the one-hour recipe compressed to $hour of the device (bf16 where the device has it)
amp=--headline-amp
"$py" -c "import sys, torch; sys.path.insert(0, 'src'); from onelip.train.config import \
bf16_support; sys.exit(0 if bf16_support('$device')[0] else 1)" || amp=
t=$(( $(left) - 60 )); [ "$t" -gt 300 ] && t=300
if [ "$t" -gt 90 ]; then
  mkdir -p "$work/results/hour" && cp -r benchmarks/results/cifar10_hour_runs "$work/results/hour/"
  timeout --signal=INT "$t" "$py" benchmarks/cifar10_hour.py --data "$data" --device "$device" \
    --select-on cpu --stage headline --headline-budget "$hour" $amp --attack 50 \
    --out "$work/results/hour" ${HOUR_ARGS:-} || echo "cifar10_hour: stopped"
fi
echo "cifar10_hour done; $((SECONDS - start)) s so far"

# 4. the image claims' full protocols with what is left
t=$(( $(left) - 25 ))
if [ "$t" -gt 40 ]; then
  PYTHON="$py" bash benchmarks/gpu_claims.sh "$data" "$work/results/claims" "$t" \
    || echo "claims: stopped"
fi

tar czf "$out/results.tar.gz" -C "$work" results
for f in cifar10_gpu.md kernel_build.md hour/cifar10_hour.md claims/report.md; do
  [ -f "$work/results/$f" ] && cp "$work/results/$f" "$out/$(echo "$f" | tr / _)"
done
echo "done in $((SECONDS - start)) s"
