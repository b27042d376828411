#!/usr/bin/env bash
# The full-mode check on a lent GPU machine (no internet, no fastai, 64 MiB of working tree), run there from the
# repository root with .whl (`make gpu-wheels`) and build/gpu_data (`make gpu-data`) carried:
#     bash scripts/lent_gpu_check.sh "$OUT/gpu" COMMIT      # COMMIT: the commit being run (the copy there has no .git)
# Writes to $1 the ledger, summary.json, data_path.json (bench/gpu_data_path.py), optimizer_step.json
# (bench/optimizer_step.py), gpu.txt, log.txt and lanes.tgz (each lane's log, summary and ledger): 7 files, as at most
# 8 come back from the machine, none deeper than $OUT/a/b/. Copy them to results/gpu/, commit them, and run
# scripts/gpu_reference.py. Its last log line is the command's wall time.
set -euo pipefail
out=${1:?pass the results folder, e.g. \$OUT/gpu}
commit=${2:?pass the commit being run, e.g. \$(git rev-parse --short HEAD)}
mkdir -p "$out"
# Whatever ends the script: the lanes' folders as one archive, nothing else beside the results
trap '{ tar czf "$out/lanes.tgz" -C "$out" lanes 2>/dev/null || true; rm -rf "$out/lanes" "$out"/*.lock "$out"/*.tmp; ls -l "$out"; }' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# A wheel the image lacks stops the call here, in seconds, not after unpacking the data
python3 -c 'import imagenette_course.cli, imagenette_course.recipes' 2>&1 | tee -a "$out/log.txt"
# A rerun on a machine still warm from the last one starts afresh: no resuming the cut runs of the last one
export IMAGENETTE_CHECKPOINTS=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
rm -rf /tmp/imagenette  # a rerun on the same machine unpacks again
python3 scripts/unpack_gpu_data.py build/gpu_data /tmp/imagenette 2>&1 | tee -a "$out/log.txt"
# All inside one call's 10 minutes (600 s), so that what finished comes back: wheels and unpacking (~20 s); the CUDA
# code paths at tiny sizes (chapter 5's recipe: progressive resizing, then TTA; ~30 s, 60 at most), which stops the
# call within a minute if they are broken, leaving the device time to fix and rerun; the recipes (370 s at most; none starts that would not end within 5.9 minutes);
# the data-path benchmark (80 s at most), then the optimizer step benchmark (40 s) if there is time. `-k`: a step
# that ignores the SIGTERM is killed soon after; `|| step`: a failed or cut step still leaves the next its time.
step() { echo "=== $1: exit status $2" | tee -a "$out/log.txt"; }
smoke=$(mktemp -d)
timeout -k 5 60 python3 scripts/gpu_check.py /tmp/imagenette --out "$smoke" --smoke --recipes tta --commit "$commit" \
  2>&1 | tee -a "$out/log.txt" || { step smoke $?; exit 1; }
timeout -k 15 370 python3 scripts/gpu_check.py /tmp/imagenette --out "$out" --budget-min 5.9 --lanes 3 --commit "$commit" 2>&1 | tee -a "$out/log.txt" || step gpu_check $?
tar czf "$out/lanes.tgz" -C "$out" lanes 2>/dev/null && rm -rf "$out/lanes"  # now: the call may yet be cut
timeout -k 5 80 python3 bench/gpu_data_path.py /tmp/imagenette --out "$out/data_path.json" 2>&1 | tee -a "$out/log.txt" || step gpu_data_path $?
if (( SECONDS < 500 )); then
  timeout -k 5 40 python3 bench/optimizer_step.py --rounds 2 --out "$out/optimizer_step.json" 2>&1 | tee -a "$out/log.txt" || step optimizer_step $?
fi
echo "=== lent_gpu_check.sh: ${SECONDS} s in all" | tee -a "$out/log.txt"
