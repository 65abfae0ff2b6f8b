# Briefing — two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs on its own.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= out/demo
PERSONS ?= 20000
SEED   ?= 7

.PHONY: demo test bench model ranker audit venv clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,evaluation]'
	$(BIN)/python -m pip install --quiet --no-deps gecko-syndata==0.6.4 'lxml>=5.3,<6'
	@touch $(STAMP)

venv: $(STAMP)

## demo: build a synthetic county, link it, print the evaluation, resolve a few incidents, then serve the API
PORT   ?= 8080
demo: $(STAMP)
	$(BIN)/briefing synth --persons $(PERSONS) --seed $(SEED) --as-of today --out $(DEMO)/county
	$(BIN)/briefing link $(DEMO)/county/records.csv --model models/matcher.json --out $(DEMO)/link
	$(BIN)/briefing eval linkage --clusters $(DEMO)/link/clusters.csv --truth $(DEMO)/county/truth.csv \
		--demographics $(DEMO)/county/demographics.csv --json $(DEMO)/linkage.json
	@echo
	@echo "Resolving the first 3 incidents of the county in real time:"
	$(BIN)/briefing resolve --model models/matcher.json --records $(DEMO)/county/records.csv \
		--clusters $(DEMO)/link/clusters.csv --incidents $(DEMO)/county/incidents.csv --limit 3
	@echo
	rm -f $(DEMO)/briefing.db $(DEMO)/briefing.db-wal $(DEMO)/briefing.db-shm
	$(BIN)/briefing ingest --db $(DEMO)/briefing.db $(DEMO)/county/records.csv \
		$(DEMO)/county/context_items.csv $(DEMO)/county/consents.csv
	@echo
	$(BIN)/python -m api.cli.demo --db $(DEMO)/briefing.db --county $(DEMO)/county --port $(PORT)
	@echo
	@echo "Serving on http://127.0.0.1:$(PORT) (Ctrl-C to stop). Files: $(DEMO)/county, $(DEMO)/link, $(DEMO)/briefing.db"
	$(BIN)/briefing serve --db $(DEMO)/briefing.db --port $(PORT)

## test: the whole suite except benchmarks marked slow
test: $(STAMP)
	$(BIN)/python -m pytest -q

## bench: the benchmarks behind BENCHMARKS.md (slow: tens of minutes)
bench: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -s tests/bench

## model: rebuild models/matcher.json and models/MATCHER.md (train on county seed 1, measure on held-out seed 101)
MODEL_WORK := out/model
model: $(STAMP)
	$(BIN)/briefing synth --persons 38800 --seed 1 --out $(MODEL_WORK)/train --quiet
	$(BIN)/briefing train-matcher $(MODEL_WORK)/train/records.csv --truth $(MODEL_WORK)/train/truth.csv --out models/matcher.json
	$(BIN)/briefing synth --persons 38800 --seed 101 --out $(MODEL_WORK)/heldout --quiet
	$(BIN)/briefing link $(MODEL_WORK)/heldout/records.csv --model models/matcher.json --out $(MODEL_WORK)/heldout/link --quiet
	$(BIN)/briefing eval linkage --clusters $(MODEL_WORK)/heldout/link/clusters.csv --truth $(MODEL_WORK)/heldout/truth.csv \
		--demographics $(MODEL_WORK)/heldout/demographics.csv --json $(MODEL_WORK)/heldout.json
	$(BIN)/python -m evaluation.linkage.model_card --model models/matcher.json --eval $(MODEL_WORK)/heldout.json --out models/MATCHER.md

## ranker: evaluate the ranking on a held-out split, then retrain models/ranker.json on all feedback and write models/RANKER.md
RANKER_WORK := out/ranking
ranker: $(STAMP)
	$(BIN)/briefing synth --persons 38800 --seed 1 --out $(RANKER_WORK)/county --quiet
	$(BIN)/briefing eval ranking $(RANKER_WORK)/county --json $(RANKER_WORK)/eval.json
	$(BIN)/briefing train-ranker $(RANKER_WORK)/county --out models/ranker.json --eval $(RANKER_WORK)/eval.json

## audit: the fairness audit on a held-out 100k-record county: out/audit/report.html, report.json, and (--cards models) the model cards' sections
AUDIT_WORK := out/audit
audit: $(STAMP)
	$(BIN)/briefing synth --persons 38800 --seed 101 --out $(AUDIT_WORK)/county --quiet
	$(BIN)/briefing eval fairness $(AUDIT_WORK)/county --out $(AUDIT_WORK) --cards models

clean:
	rm -rf out .pytest_cache
