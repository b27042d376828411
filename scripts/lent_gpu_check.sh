#!/usr/bin/env bash
# The full-mode check on a lent GPU machine (no internet, no fastai, 64 MiB of working tree), run there from the
# repository root with .whl (`make gpu-wheels`) and build/gpu_data (`make gpu-data`) carried. Writes the ledger,
# summary.json, data_path.json (bench/gpu_data_path.py), optimizer_step.json (bench/optimizer_step.py) and the log to $1 (default $OUT/gpu); copy them to
# results/gpu/, commit them, and run scripts/gpu_reference.py. $2: the commit being run (the copy there has no .git).
set -euo pipefail
out=${1:-${OUT:?set OUT or pass the results folder}/gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
rm -rf /tmp/imagenette  # a rerun on the same machine unpacks again
python3 scripts/unpack_gpu_data.py build/gpu_data /tmp/imagenette 2>&1 | tee -a "$out/log.txt"
# All inside one call's 10 minutes (600 s), so that what finished comes back: wheels and unpacking (~20 s), the
# recipes (410 s at most; none starts after 6 minutes), the data-path benchmark (90 s at most), then the optimizer
# step benchmark (60 s at most). `|| true`: a failed or cut step still leaves the next its time.
timeout 410 python3 scripts/gpu_check.py /tmp/imagenette --out "$out" --budget-min 6 --lanes 3 ${2:+--commit "$2"} 2>&1 | tee -a "$out/log.txt" || true
timeout 90 python3 bench/gpu_data_path.py /tmp/imagenette --out "$out/data_path.json" 2>&1 | tee -a "$out/log.txt" || true
timeout 60 python3 bench/optimizer_step.py --rounds 2 --out "$out/optimizer_step.json" 2>&1 | tee -a "$out/log.txt"
