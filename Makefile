# make install | make test | make demo | make bench | make soak | make lint
# Everything runs in .venv, created on first use; one pip call installs every package editable.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sluice-installed
PACKAGES := -e ./core -e ./plugins/es -e ./plugins/s3 -e ./plugins/transforms -e ./plugins/http -e ./plugins/postgres -e './plugins/formats[test]' -e ./plugins/metrics -e './dags[airflow]' -e ./examples/plugin -e ./examples/sink-plugin
SOURCES  := core/pyproject.toml plugins/es/pyproject.toml plugins/s3/pyproject.toml \
            plugins/transforms/pyproject.toml plugins/http/pyproject.toml plugins/postgres/pyproject.toml plugins/formats/pyproject.toml plugins/metrics/pyproject.toml dags/pyproject.toml examples/plugin/pyproject.toml examples/sink-plugin/pyproject.toml requirements-test.txt

.PHONY: install test demo bench soak lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) $(SOURCES)
	$(PY) -m pip install -q $(PACKAGES) -r requirements-test.txt
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/sluice demo

bench: install
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) -m bench $(BENCH_ARGS)

soak: install
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) -m bench.soak $(SOAK_ARGS)

lint: install
	$(VENV)/bin/ruff check core plugins dags tests examples

clean:
	rm -rf $(VENV) .sluice out
