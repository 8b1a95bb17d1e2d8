# Sourced by hit_instructions.sh and hit_footprint.sh: checks for valgrind, builds the
# callgrind harness (benches/harness/hit_instructions.rs, registered as an example in Cargo.toml)
# and makes a scratch folder.
# Sets: bin (the harness), out (the scratch folder, removed on exit).
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }
cargo build --quiet --release --example hit_instructions
bin="${CARGO_TARGET_DIR:-target}/release/examples/hit_instructions"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
