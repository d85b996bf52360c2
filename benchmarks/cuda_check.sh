#!/usr/bin/env bash
# What a lent GPU checks for this project, in one call of under 10 minutes (benchmarks/README.md,
# "On a GPU"):
#   tests     the CUDA tests (tests/test_cuda.py; skipped on machines without a GPU, as CI's)
#   demo      the four stages end to end on CUDA (generated images, `make demo`'s flags)
#   real      train_byol.py with the long run's recipe (configs/long_byol.args) on real images:
#             --compile on, stopped after 4 epochs, resumed to 8 — images/s per epoch,
#             the compile's cost, and an exact resume under torch.compile on a GPU
#   bench     bench_byol.py --variants --compile at the study's 64 px and batch 64 (every ratio)
#   bench256  bench_byol.py at batch 256 (how far batch 64 is from filling the GPU)
#   compile   bench_byol.py --compile-only: eager vs compiled step, compile seconds, break-even steps
# It runs with whatever python3 holds torch there (no venv: such machines often have no network),
# the repository on PYTHONPATH. Each part has its own time limit and log; one failing stops no other.
#   benchmarks/cuda_check.sh DATA_DIR OUT_DIR    # DATA_DIR: a PetImages folder (Cat/, Dog/), >= 1,000 images
#   PARTS="tests demo" benchmarks/cuda_check.sh DATA_DIR OUT_DIR    # only these parts
set -u
if [ $# -ne 2 ] || [ ! -d "$1/Cat" ] || [ ! -d "$1/Dog" ]; then
	echo "usage: $0 DATA_DIR OUT_DIR  (DATA_DIR holds Cat/ and Dog/)" >&2
	exit 2
fi
data=$(realpath "$1")
mkdir -p "$2"
out=$(realpath "$2")
py=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
work=$(mktemp -d)

parts=" ${PARTS:-env tests demo real bench bench256 compile} "
part() { # NAME SECONDS COMMAND...: its output in OUT_DIR/NAME.log, its exit status and time in parts.log
	local name=$1 limit=$2 start=$SECONDS rc
	shift 2
	[[ $parts == *" $name "* ]] || return 0
	timeout "$limit" "$@" >"$out/$name.log" 2>&1
	rc=$?
	echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$out/parts.log"
}

part env 60 bash -c "nvidia-smi; nproc; free -g; $py -c 'import sys, torch, torchvision; \
print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.cuda.get_device_name())'"

part tests 120 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py

demo=$work/demo
part demo 150 bash -c "set -e
$py -m byol.demo_images $demo/images --per-class 120 --size 64
$py data_split.py --data-dir $demo/images --out-dir $demo/results --n-labelled 40 --n-test 80
$py train_byol.py --out-dir $demo/results --epochs 4 --batch-size 32 --image-size 48 --cache-size 56 \
	--optimizer adamw --lr 1e-3 --tau-base 0.99 --crop-min-scale 0.2 --overwrite
$py train_classifier.py --out-dir $demo/results --seeds 2 --epochs 8 --batch-size 16 --n-labels 10,40 --overwrite
$py plot_results.py --out-dir $demo/results
$py -c 'import torch, torchvision; m = torchvision.models.resnet18(); m.fc = torch.nn.Identity(); \
print(\"stock resnet18 loads byol.pt:\", m.load_state_dict(torch.load(\"$demo/results/byol.pt\")[\"backbone\"]))'"

real=$work/real
part real 200 bash -c "set -e
$py data_split.py --data-dir $data --out-dir $real --n-labelled 250 --n-test 400
$py train_byol.py --out-dir $real @configs/long_byol.args --epochs 8 --compile on --stop-after-epochs 4
$py train_byol.py --out-dir $real @configs/long_byol.args --epochs 8 --compile on --resume
cp $real/byol_metrics.csv $out/real_byol_metrics.csv"

part bench 150 "$py" benchmarks/bench_byol.py --device cuda --data-dir "$data" --work-dir "$work/bench" \
	--steps 40 --variants --compile
part bench256 60 "$py" benchmarks/bench_byol.py --device cuda --data-dir "$data" --work-dir "$work/bench" \
	--steps 20 --batch-size 256
part compile 90 "$py" benchmarks/bench_byol.py --device cuda --data-dir "$data" --work-dir "$work/bench" \
	--steps 40 --compile-only
cp "$demo/results/classifier_summary.csv" "$out/demo_classifier_summary.csv" 2>/dev/null
rm -rf "$work"
