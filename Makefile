# One command sets up and runs each job; every target creates .venv itself when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data/PetImages
# Committed studies: the current answer at the top level of RESULTS, earlier ones in RESULTS/archive.
RESULTS ?= results
# `make study`: the earlier 12-epoch study (archived), trained when missing, else redrawn.
OUT_DIR ?= $(RESULTS)/archive/study_12_epochs
DEMO_DIR ?= demo

.PHONY: setup test test-fast pipeline demo clean-demo study recipe-search time-trials long-run long-run-report

$(BIN)/python: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/python

setup: $(BIN)/python

# The whole suite (CI's command, under 6 minutes on 2 cores); test-fast leaves out the tests marked slow
# (each trains a model for seconds or starts processes): under a minute, for the edit loop.
# One pytest-xdist worker per core, each with one thread: on 2 cores 397 s against 516 s for one worker
# with two threads (the suite is mostly small models, whose ops do not split well across threads).
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto
test: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# The main job: the four stages on DATA_DIR (downloading the public archive when DATA_DIR is absent), into
# RUN_DIR, a git-ignored folder: running it never changes a committed file.
# Extra flags per stage: make pipeline SPLIT_ARGS="--n-labelled 100" BYOL_ARGS="--epochs 10 --image-size 64"
# CLASSIFIER_ARGS="--seeds 5"
# Run again (after an interruption, say), it splits anew (the same split from the same files), continues
# an unfinished pretraining and an unfinished classifier grid (with the same BYOL_ARGS and CLASSIFIER_ARGS;
# other settings are refused in one line) and keeps a finished one. --overwrite in a stage's ARGS trains
# that stage anew.
RUN_DIR ?= runs/pipeline
SPLIT_ARGS ?=
BYOL_ARGS ?=
CLASSIFIER_ARGS ?=
# $(call continue_flag,ARGS,FILE,FRESH): --resume when FILE (the stage's record of finished work) exists,
# else FRESH; nothing when ARGS already says --overwrite.
continue_flag = $(if $(findstring --overwrite,$(1)),,$(or $(call resume_flag,$(2)),$(3)))
pipeline: setup
	if [ -d "$(DATA_DIR)" ]; then \
		$(BIN)/python data_split.py --data-dir "$(DATA_DIR)" --out-dir "$(RUN_DIR)" --overwrite $(SPLIT_ARGS); \
	else \
		$(BIN)/python data_split.py --download --data-dir "$(dir $(DATA_DIR))" --out-dir "$(RUN_DIR)" \
			--overwrite $(SPLIT_ARGS); \
	fi
	$(BIN)/python train_byol.py --out-dir "$(RUN_DIR)" $(BYOL_ARGS) \
		$(call continue_flag,$(BYOL_ARGS),$(RUN_DIR)/byol_checkpoint.pt,)
	$(BIN)/python train_classifier.py --out-dir "$(RUN_DIR)" $(CLASSIFIER_ARGS) \
		$(call continue_flag,$(CLASSIFIER_ARGS),$(RUN_DIR)/classifier_metrics.csv,--overwrite)
	$(BIN)/python plot_results.py --out-dir "$(RUN_DIR)"

# No data and no internet: all four stages on a small generated image set, in DEMO_DIR (a few minutes on a CPU).
demo: setup
	$(BIN)/python -m byol.demo_images "$(DEMO_DIR)/images" --per-class 120 --size 64
	$(BIN)/python data_split.py --data-dir "$(DEMO_DIR)/images" --out-dir "$(DEMO_DIR)/results" \
		--n-labelled 40 --n-validation 40 --n-test 80 --overwrite
	$(BIN)/python train_byol.py --out-dir "$(DEMO_DIR)/results" --epochs 4 --batch-size 32 --image-size 48 \
		--cache-size 56 --optimizer adamw --lr 1e-3 --tau-base 0.99 --crop-min-scale 0.2 --overwrite
	$(BIN)/python train_classifier.py --out-dir "$(DEMO_DIR)/results" --seeds 2 --epochs 8 --batch-size 16 \
		--n-labels 10,40 --overwrite
	$(BIN)/python plot_results.py --out-dir "$(DEMO_DIR)/results"

# The reference study on the real images (docs/experiments.md): resumable, so `make study` again after an
# interruption continues where it stopped. The recipes are files: configs/study_byol.args (the committed
# 12-epoch pretraining) and configs/study_classifier.args (today's protocol: cross-validated rates; the
# committed comparison ran its fine-tuning at the old fixed rate, --finetune-lrs 1e-3).
# A stage whose outputs are complete is skipped: on a fresh clone `make study` only redraws every figure
# and table from the committed CSVs. To train again, delete $(OUT_DIR)/classifier_summary.csv and
# classifier_metrics.csv (the comparison), $(OUT_DIR)/byol.pt and byol_checkpoint.pt (the pretraining),
# ceiling_metrics.csv (the ceiling: all labels, configs/ceiling.args). The ceiling runs after the
# pretraining (it trains at byol_config.json's view size): trained with the study, continued when
# unfinished, a finished one checked without reading an image, skipped for a finished study without one.
# Then every other committed study is redrawn: the long runs' folders (LONG_OUT, issue 21's first long
# pretraining, and RESULTS/long_run_2, drawn even before their first summary.md) and every folder
# under RESULTS that holds a summary.md (plot_results.py reads only the folder's own CSVs).
STUDY_DATA_DIR ?= ../shared/data/PetImages
STUDY_BYOL_ARGS ?= @configs/study_byol.args
STUDY_CLASSIFIER_ARGS ?= @configs/study_classifier.args
resume_flag = $(if $(wildcard $(1)),--resume,)
split_in = [ -f "$(1)/splits.csv" ] || $(BIN)/python data_split.py --data-dir "$(STUDY_DATA_DIR)" --out-dir "$(1)"
split_if_missing = $(call split_in,$(OUT_DIR))
study: setup
	$(split_if_missing)
	[ -f "$(OUT_DIR)/byol.pt" ] || [ -f "$(OUT_DIR)/classifier_summary.csv" ] || \
		$(BIN)/python train_byol.py --out-dir "$(OUT_DIR)" $(STUDY_BYOL_ARGS) \
		$(call resume_flag,$(OUT_DIR)/byol_checkpoint.pt)
	[ -f "$(OUT_DIR)/classifier_summary.csv" ] && [ ! -f "$(OUT_DIR)/ceiling_metrics.csv" ] || \
		$(BIN)/python experiments/ceiling.py "$(OUT_DIR)" --out-dir "$(OUT_DIR)" @configs/ceiling.args \
		$(call resume_flag,$(OUT_DIR)/ceiling_metrics.csv $(OUT_DIR)/ceiling_choices.csv)
	[ -f "$(OUT_DIR)/classifier_summary.csv" ] || \
		$(BIN)/python train_classifier.py --out-dir "$(OUT_DIR)" $(STUDY_CLASSIFIER_ARGS) \
		$(call resume_flag,$(OUT_DIR)/classifier_metrics.csv)
	$(BIN)/python plot_results.py --out-dir "$(OUT_DIR)"
	{ echo "$(LONG_OUT)"; echo "$(RESULTS)/long_run_2"; \
		find "$(RESULTS)" -name summary.md -exec dirname {} \; ; } | sort -u | while IFS= read -r run; do \
		[ "$$run" = "$(OUT_DIR)" ] || [ ! -f "$$run/byol_metrics.csv" -a ! -f "$$run/classifier_metrics.csv" ] || \
		$(BIN)/python plot_results.py --out-dir "$$run" || exit 1; done

# Short pretraining trials, one file each in configs/trials/: those that chose the study's recipe (5
# epochs of 6,400 images at 64 px), then steps1400_* (1,404 steps on all images, ranked by the 5,000-voter
# diagnostic k-NN). Each runs in $(RECIPE_DIR)/NAME, then one table with the monitors and a
# linear probe per trial. The order is the table's.
TRIALS := adamw lars_cache80 lars_paper lars_eta002 rank_eta002 rank_eta0001 rank_eta0005 rank_eta002_wd1e4 \
	long_eta002 long_eta0005 \
	steps1400_base steps1400_tau097 steps1400_tau098 steps1400_sgd steps1400_larc steps1400_pred10 steps1400_96px \
	steps1400_pred10_seed1 steps1400_sgd_seed1
# One trial: its own folder, reading the study's split and image cache (--split, --cache-dir); skipped
# once it has byol.pt.
RECIPE_DIR ?= $(RESULTS)/archive/recipe_search
trial_dir = $(RECIPE_DIR)/$(1)
shared_inputs = --split "$(OUT_DIR)/splits.csv" --cache-dir "$(OUT_DIR)/cache"
run_trial = ([ -f "$(trial_dir)/byol.pt" ] || $(BIN)/python train_byol.py --out-dir "$(trial_dir)" $(shared_inputs) \
	@configs/trials/$(1).args $(call resume_flag,$(trial_dir)/byol_checkpoint.pt))
recipe-search: setup
	$(split_if_missing)
	$(foreach trial,$(TRIALS),$(call run_trial,$(trial)) && ) true
	$(BIN)/python experiments/recipe_search.py $(foreach trial,$(TRIALS),$(call trial_dir,$(trial))) \
		$(shared_inputs) --out "$(RECIPE_DIR).csv"

# Issue 43's equal-time trials (configs/time_trials/: the CPU setting with one change each, for the same
# wall-clock budget), in TIME_TRIALS_DIR (git-ignored) sharing one split and image cache, then one table
# (RESULTS/time_trials.csv) with each trial's steps, validation k-NN and a frozen probe at 250 labels
# scored on validation. Resumable: a finished trial is skipped, an interrupted one continues.
# TIME_BUDGET gives every trial another budget than its file's 40 minutes (the leaders at the CPU
# setting's 2 hours, in their own TIME_TRIALS_DIR).
#   make time-trials TIME_TRIALS="base progressive"
#   make time-trials TIME_TRIALS="lr_half warmup_half" TIME_BUDGET=2h TIME_TRIALS_DIR=runs/time_trials_2h
TIME_TRIALS ?= base lr_half warmup_half progressive lr_quarter lr_half_progressive warmup2 base_seed1 lr_half_seed1 \
	batch32 batch128
TIME_TRIALS_DIR ?= runs/time_trials
TIME_BUDGET ?=
time_trial_dir = $(TIME_TRIALS_DIR)/$(1)
time_inputs = --split "$(TIME_TRIALS_DIR)/splits.csv" --cache-dir "$(TIME_TRIALS_DIR)/cache"
run_time_trial = ([ -f "$(call time_trial_dir,$(1))/byol.pt" ] || $(BIN)/python train_byol.py \
	--out-dir "$(call time_trial_dir,$(1))" $(time_inputs) @configs/time_trials/$(1).args \
	$(if $(TIME_BUDGET),--time-budget $(TIME_BUDGET)) $(call resume_flag,$(call time_trial_dir,$(1))/byol_checkpoint.pt))
time-trials: setup
	$(call split_in,$(TIME_TRIALS_DIR))
	$(foreach trial,$(TIME_TRIALS),$(call run_time_trial,$(trial)) && ) true
	$(BIN)/python experiments/recipe_search.py $(foreach trial,$(TIME_TRIALS),$(call time_trial_dir,$(trial))) \
		$(time_inputs) --out "$(RESULTS)/time_trials.csv"

# Issue 21's long pretraining and everything it feeds, in one resumable command (docs/experiments.md):
# the study's split in LONG_DIR, configs/long_byol.args (30,186 steps; continued with --resume after an
# interruption), then `long-run-report`, then the study's comparison grid on the final byol.pt, then
# the run's own ceiling (all labels; LONG_CEILING_ARGS: rate and length chosen on validation), their
# CSVs and the report in LONG_OUT. Run again, it continues where it stopped; a finished step is skipped
# (a finished ceiling is checked without reading an image). LONG_DIR holds the weights, snapshots and
# image cache: never commit it.
#   make long-run LONG_DIR=/path/outside/the/checkout
# `make long-run-report` while it trains (from a second shell): the run's small files so far copied to
# LONG_OUT, each snapshot so far scored (python experiments/compute_curve.py), the report redrawn.
# The study's random-init half needs no weights: trained beforehand with --inits random at the run's
# sizes (results/long_run/random_half/README.md) and kept in LONG_RANDOM_HALF, it seeds the study,
# which then trains only the BYOL half (train_classifier.py --resume checks the split and settings).
LONG_DIR ?= runs/long
LONG_OUT ?= $(RESULTS)/long_run
LONG_RANDOM_HALF ?= $(LONG_OUT)/random_half
LONG_BYOL_ARGS ?= @configs/long_byol.args
LONG_CURVE_ARGS ?=
LONG_CLASSIFIER_ARGS ?= $(STUDY_CLASSIFIER_ARGS)
LONG_CEILING_ARGS ?= @configs/ceiling_grid.args
LONG_COPIED := byol_config.json byol_metrics.csv
# the study's rows, and its per-image predictions (the paired bootstrap recomputes from them)
LONG_STUDY_COPIED := classifier_config.json classifier_metrics.csv classifier_summary.csv classifier_paired.csv \
	classifier_predictions.csv
copy_present = for name in $(3); do [ ! -f "$(1)/$$name" ] || cp "$(1)/$$name" "$(2)/"; done
# (A canned recipe, not a sub-make: a sub-make would not inherit `make -o`.)
define long_run_curve
mkdir -p "$(LONG_OUT)"
$(call copy_present,$(LONG_DIR),$(LONG_OUT),$(LONG_COPIED))
[ -z "$$(ls "$(LONG_DIR)/snapshots" 2>/dev/null)" ] || \
	$(BIN)/python experiments/compute_curve.py "$(LONG_DIR)" --out-dir "$(LONG_OUT)" $(LONG_CURVE_ARGS)
endef
define long_run_report
$(long_run_curve)
$(BIN)/python plot_results.py --out-dir "$(LONG_OUT)"
endef
# The report is drawn before the study only when the study still has runs to train (hours, at the
# study's sizes); a rerun with the study done draws it once, at the end.
long-run: setup
	$(call split_in,$(LONG_DIR))
	[ -f "$(LONG_DIR)/byol.pt" ] || $(BIN)/python train_byol.py --out-dir "$(LONG_DIR)" $(LONG_BYOL_ARGS) \
		$(call resume_flag,$(LONG_DIR)/byol_checkpoint.pt)
	$(long_run_curve)
	[ -f "$(LONG_DIR)/classifier_summary.csv" ] || $(BIN)/python plot_results.py --out-dir "$(LONG_OUT)"
	[ -f "$(LONG_DIR)/classifier_metrics.csv" ] || [ ! -f "$(LONG_RANDOM_HALF)/classifier_metrics.csv" ] || \
		cp "$(LONG_RANDOM_HALF)/classifier_metrics.csv" "$(LONG_RANDOM_HALF)/classifier_config.json" "$(LONG_DIR)/"
	[ -f "$(LONG_DIR)/classifier_summary.csv" ] || \
		$(BIN)/python train_classifier.py --out-dir "$(LONG_DIR)" $(LONG_CLASSIFIER_ARGS) \
		$$([ -f "$(LONG_DIR)/classifier_metrics.csv" ] && echo --resume)
	$(BIN)/python experiments/ceiling.py "$(LONG_DIR)" --out-dir "$(LONG_DIR)" $(LONG_CEILING_ARGS) \
		$(call resume_flag,$(LONG_DIR)/ceiling_metrics.csv $(LONG_DIR)/ceiling_choices.csv)
	$(call copy_present,$(LONG_DIR),$(LONG_OUT),$(LONG_STUDY_COPIED) ceiling_config.json ceiling_metrics.csv \
		ceiling_choices.csv)
	$(BIN)/python plot_results.py --out-dir "$(LONG_OUT)"

long-run-report: setup
	$(long_run_report)
