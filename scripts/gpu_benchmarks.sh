#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md on a GPU, for a session that is lent one (issue 7's H100
# targets). Each command prints device, versions and date; outputs go to $OUT (or ./gpu-out).
#
#   bash scripts/gpu_benchmarks.sh [DATA_DIR]      # DATA_DIR holds MNIST/raw/
#
# On the device tool's machine, pyro-ppl and arviz are not installed: carry them as wheels
# (the device README's Notes), e.g. pyro-ppl==1.9.2, pyro-api, opt-einsum, arviz==0.23.4
# and what `unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist` lists beyond the
# image's packages, and put the MNIST IDX files in a carried folder. Each call of the device
# tool may run 10 minutes: run the steps below one per call if they do not fit together.
set -euo pipefail
data_dir=${1:-../shared/data}
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-}:.
run() { echo "+ $*"; "$@" 2>&1 | tee -a "$out/benchmarks.log"; }

run python scripts/bench_svi.py --device cuda --data-dir "$data_dir" --epochs 5 \
    --loops pyro-vae pyro-vae-eager pyro-vae-bf16 pyro-vae-unchecked hand-written \
    hand-written-foreach pyro-svi
run python scripts/bench_loglik.py --device cuda --data-dir "$data_dir" --images 10000 --repeats 3
run python scripts/bench_models.py --device cuda --data-dir "$data_dir" --eval-images 100
run python scripts/bench_models.py --device cuda --data-dir "$data_dir" --eval-images 100 \
    --precision bf16
run python scripts/time_to_quality.py --device cuda --data-dir "$data_dir" --out "$out/ttq"
