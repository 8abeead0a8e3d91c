# The two commands a new user needs: `make demo` and `make test`.
# Both depend on the environment; on a built tree they skip straight to work.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV_STAMP := install/.setup-done
ENV := source scripts/env.sh &&
# Inputs whose change needs a new venv or a colcon rebuild (Python sources are
# symlink-installed, so editing them needs neither; a new or removed file in an installed folder does).
ENV_INPUTS := $(wildcard models/weights/*.pt) scripts/export_demo_models.sh requirements.in requirements.lock scripts/setup_env.sh colcon.meta \
	$(wildcard src/*/package.xml src/*/setup.cfg src/*/setup.py src/*/CMakeLists.txt src/perception_msgs/msg/*.msg) \
	config/range_correction $(wildcard config/range_correction/*.yaml)
PYTEST_ARGS ?=

.PHONY: help setup build demo test lint lock bench reliability-doc clean

help:
	@echo "make demo   run the perception stack on the shipped sample data and models (sets up first if needed)"
	@echo "make test   run unit and system tests (sets up first if needed)"
	@echo "make setup  create .venv (ROS 2 Jazzy wheels, torch CPU, ONNX Runtime + QNN) and colcon build"
	@echo "make lint   ruff check"
	@echo "make bench  run the benchmarks under bench/"
	@echo "make reliability-doc  regenerate docs/reliability.md from the tests' reliability markers"

$(ENV_STAMP): $(ENV_INPUTS)
	bash scripts/setup_env.sh

setup: $(ENV_STAMP)

build: $(ENV_STAMP)

demo: $(ENV_STAMP)
	$(ENV) python scripts/demo.py

test: $(ENV_STAMP)
	$(ENV) ruff check . && python -m pytest $(PYTEST_ARGS)

lint: $(ENV_STAMP)
	$(ENV) ruff check .

bench: $(ENV_STAMP)
	$(ENV) for b in bench/bench_*.py; do echo "== $$b"; python $$b || exit 1; done

reliability-doc: $(ENV_STAMP)
	$(ENV) python scripts/reliability_doc.py

lock:
	source .venv/bin/activate && pip freeze --exclude-editable | grep -v '^model_tools\|^depth_perception\|^seg_perception' > requirements.lock

clean:
	rm -rf build install log
