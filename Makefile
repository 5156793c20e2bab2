# retro's make targets: the interface for people and CI (`make help` lists them).
CARGO ?= cargo
BENCH_ARGS ?=
TORTURE_ARGS ?=

.PHONY: help build test demo bench fmt lint doc torture clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

build: ## Build everything (release)
	$(CARGO) build --release --workspace

test: ## Run every test: unit, integration, doc tests, CLI end-to-end, PostgreSQL, web UI in Chromium
	bash tests/postgres/install.sh
	$(CARGO) fetch --locked
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	bash tests/browser/run.sh target/debug/retro

demo: ## Run the built-in example domain in a fresh depot and print its log
	$(CARGO) run --quiet --release -p retro-cli --bin retro -- demo

bench: ## Run the benchmarks and the peer comparison; writes docs/benchmarks.md
	bash tests/postgres/install.sh
	python3 -c 'import venv, ensurepip' 2>/dev/null || (apt-get update -qq && apt-get install -y -qq python3-venv) || echo "python3-venv not installed: the Python eventsourcing peer will be n/a"
	$(CARGO) build --release -p retro-bench -p retro-peers -p retro-cli
	./target/release/retro-bench $(BENCH_ARGS)

torture: ## Crash-and-concurrency torture (default 10 min; TORTURE_SECS=N, TORTURE_ARGS=--only CLASS), then the long power-loss test (RETRO_POWERLOSS_SEEDS=N workloads)
	command -v strace >/dev/null || (apt-get update -qq && apt-get install -y -qq strace) || echo "strace not installed: the syskill class will be skipped"
	$(CARGO) build --release -p retro-torture -p retro-cli
	./target/release/retro-torture --seconds $${TORTURE_SECS:-600} $(TORTURE_ARGS)
	RETRO_POWERLOSS_SEEDS=$${RETRO_POWERLOSS_SEEDS:-40} $(CARGO) test --release -p retro-depot --test depot -- --ignored --nocapture power_loss_long

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## fmt check, clippy with -D warnings, docs with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

clean: ## Remove build output
	$(CARGO) clean
