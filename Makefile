# Shortcuts; the scripts are the source of truth.
.PHONY: run test fmt types
run:
	scripts/run.sh
test:
	scripts/test.sh
fmt:
	cargo fmt --all
types:
	UPDATE_TS_TYPES=1 cargo test --lib typescript
