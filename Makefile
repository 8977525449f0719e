# Two commands on a fresh machine with Python 3.11+, git and make:
#   make run    virtualenv + install + embedded PostgreSQL/Redis + demo data + API + worker
#   make test   virtualenv + install + lint + type check + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
TYPECHECK_TREE := build/typecheck

.PHONY: install run test lint format typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/coalition dev

test: install lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# mypy cannot see packages that an editable install maps from other folders (the repository
# root becomes `coalition`), so it checks a staging copy laid out the way the wheel installs it.
typecheck: install
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)/coalition
	cp -r platform merchants campaigns settlement migrations $(TYPECHECK_TREE)/coalition/
	touch $(TYPECHECK_TREE)/coalition/__init__.py
	cd $(TYPECHECK_TREE) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p coalition

pytest: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build .coalition .mypy_cache .ruff_cache .pytest_cache .hypothesis
