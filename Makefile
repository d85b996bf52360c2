# One command sets up and runs each job; every target creates .venv itself when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data/PetImages
OUT_DIR ?= results
DEMO_DIR ?= demo

.PHONY: setup test pipeline demo clean-demo

$(BIN)/python: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/python

setup: $(BIN)/python

test: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The main job: the four stages on DATA_DIR (downloading the public archive when DATA_DIR is absent).
# Extra flags per stage: make pipeline BYOL_ARGS="--epochs 10 --image-size 64" CLASSIFIER_ARGS="--seeds 5"
BYOL_ARGS ?=
CLASSIFIER_ARGS ?=
pipeline: setup
	if [ -d "$(DATA_DIR)" ]; then \
		$(BIN)/python data_split.py --data-dir "$(DATA_DIR)" --out-dir "$(OUT_DIR)"; \
	else \
		$(BIN)/python data_split.py --download --data-dir "$(dir $(DATA_DIR))" --out-dir "$(OUT_DIR)"; \
	fi
	$(BIN)/python train_byol.py --out-dir "$(OUT_DIR)" $(BYOL_ARGS)
	$(BIN)/python train_classifier.py --out-dir "$(OUT_DIR)" $(CLASSIFIER_ARGS)
	$(BIN)/python plot_results.py --out-dir "$(OUT_DIR)"

# No data and no internet: all four stages on a small generated image set, in DEMO_DIR (a few minutes on a CPU).
demo: setup
	$(BIN)/python -m byol.demo_images "$(DEMO_DIR)/images" --per-class 120 --size 64
	$(BIN)/python data_split.py --data-dir "$(DEMO_DIR)/images" --out-dir "$(DEMO_DIR)/results" \
		--n-labelled 40 --n-test 80
	$(BIN)/python train_byol.py --out-dir "$(DEMO_DIR)/results" --epochs 4 --batch-size 32 --image-size 48 \
		--cache-size 56 --optimizer adamw --lr 1e-3 --tau-base 0.99 --crop-min-scale 0.2
	$(BIN)/python train_classifier.py --out-dir "$(DEMO_DIR)/results" --seeds 2 --epochs 8 --batch-size 16 \
		--n-labels 10,40
	$(BIN)/python plot_results.py --out-dir "$(DEMO_DIR)/results"
