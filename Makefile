.PHONY: demo test check setup bench
demo:     ## 3 masters + 2 Docker nodes, a web app, the leader killed, a rollout and undo
	bash scripts/demo.sh
test:     ## everything CI runs: set-up, ruff, mypy, unit, cluster and chaos tiers
	bash scripts/test.sh
check: test
setup:
	bash scripts/setup.sh
unit:     ## the fast tier, for a loop
	.venv/bin/python -m pytest -m unit tests -q
bench:    ## raftkube vs a 3-member etcd (if etcd-server is installed)
	.venv/bin/python bench/store.py --record docs/benchmarks.md
