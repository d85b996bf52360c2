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
pipeline: setup
	if [ -d "$(DATA_DIR)" ]; then \
		$(BIN)/python data_split.py --data-dir "$(DATA_DIR)" --out-dir "$(OUT_DIR)"; \
	else \
		$(BIN)/python data_split.py --download --data-dir "$(dir $(DATA_DIR))" --out-dir "$(OUT_DIR)"; \
	fi

# No data and no internet: the same stages on a small generated image set, in DEMO_DIR.
demo: setup
	$(BIN)/python -m byol.demo_images "$(DEMO_DIR)/images"
	$(BIN)/python data_split.py --data-dir "$(DEMO_DIR)/images" --out-dir "$(DEMO_DIR)/results" \
		--n-labelled 40 --n-test 40
