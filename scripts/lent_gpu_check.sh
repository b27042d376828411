#!/usr/bin/env bash
# The full-mode check on a lent GPU machine (no internet, no fastai, 64 MiB of working tree), run there from the
# repository root with .whl (`make gpu-wheels`) and build/gpu_data (`make gpu-data`) carried:
#     bash scripts/lent_gpu_check.sh "$OUT/gpu" COMMIT      # COMMIT: the commit being run (the copy there has no .git)
# Writes to $1 the ledger, summary.json, data_path.json (bench/gpu_data_path.py), optimizer_step.json
# (bench/optimizer_step.py), gpu.txt, log.txt and lanes.tgz (each lane's log, summary and ledger): 7 files, as at most
# 8 come back from the machine, none deeper than $OUT/a/b/. Copy them to results/gpu/, commit them, and run
# scripts/gpu_reference.py. The log's last line is the command's wall time.
set -euo pipefail
out=${1:?pass the results folder, e.g. \$OUT/gpu}
commit=${2:?pass the commit being run, e.g. \$(git rev-parse --short HEAD)}
mkdir -p "$out"
# The lanes' folders as one archive (none deeper than $OUT/a/b/ comes back), if the check got to make them
archive_lanes() { if [[ -d $out/lanes ]]; then tar czf "$out/lanes.tgz" -C "$out" lanes && rm -rf "$out/lanes"; fi; }
# Whatever ends the script: the archive, nothing else beside the results, and the command's wall time
trap '{ archive_lanes || true; rm -rf "$out"/*.lock "$out"/*.tmp; ls -l "$out"; echo "=== lent_gpu_check.sh: ${SECONDS} s in all" | tee -a "$out/log.txt"; }' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# A wheel the image lacks stops the call here, in seconds, not after unpacking the data
python3 -c 'import imagenette_course.cli, imagenette_course.recipes' 2>&1 | tee -a "$out/log.txt"
# A rerun on a machine still warm from the last one starts afresh: no resuming the cut runs of the last one
export IMAGENETTE_CHECKPOINTS=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
rm -rf /tmp/imagenette  # a rerun on the same machine unpacks again
python3 scripts/unpack_gpu_data.py build/gpu_data /tmp/imagenette 2>&1 | tee -a "$out/log.txt"
# All inside one call's 10 minutes (600 s), so that what finished comes back; each step's time limit is what is left
# of them (`left`), less what the steps after it need. Wheels and unpacking take ~20 s. Then the CUDA code paths at
# tiny sizes, in two lanes as the check runs them (chapter 5's recipe: progressive resizing and TTA; mixup; sota:
# the size schedule, label smoothing), which stops the call within 90 s if they are broken, leaving the device time
# to fix and rerun. Then the recipes (at most 370 s; none starts that would not end 40 s before its limit), the
# data-path benchmark (80 s at most), and the optimizer step benchmark (40 s) if there is time. `-k`: a step that
# ignores the SIGTERM is killed soon after; `|| step`: a failed or cut step still leaves the next its time.
deadline=585  # s: the call's 600, less the trap's archive
left() { echo $(( deadline - SECONDS )); }
step() { echo "=== $1: exit status $2" | tee -a "$out/log.txt"; }
smoke=$(mktemp -d)
timeout -k 5 90 python3 scripts/gpu_check.py /tmp/imagenette --out "$smoke" --smoke --lanes 2 --recipes tta,mixup,sota \
  --commit "$commit" 2>&1 | tee -a "$out/log.txt" || { step smoke $?; exit 1; }
check_s=$(( $(left) - 100 )); (( check_s > 370 )) && check_s=370  # 100 s: the data-path benchmark and the archive
budget_min=$(python3 -c "print(round(($check_s - 40) / 60, 2))")
timeout -k 15 "$check_s" python3 scripts/gpu_check.py /tmp/imagenette --out "$out" --budget-min "$budget_min" --lanes 3 \
  --commit "$commit" 2>&1 | tee -a "$out/log.txt" || step gpu_check $?
archive_lanes  # now: the call may yet be cut
bench_s=$(( $(left) - 5 )); (( bench_s > 80 )) && bench_s=80
# two rounds of fewer steps than its default: 4 paths at 2 sizes, each round, within its 80 s
timeout -k 5 "$bench_s" python3 bench/gpu_data_path.py /tmp/imagenette --rounds 2 --steps 30 --out "$out/data_path.json" 2>&1 | tee -a "$out/log.txt" || step gpu_data_path $?
if (( $(left) > 50 )); then
  timeout -k 5 40 python3 bench/optimizer_step.py --rounds 2 --out "$out/optimizer_step.json" 2>&1 | tee -a "$out/log.txt" || step optimizer_step $?
fi
