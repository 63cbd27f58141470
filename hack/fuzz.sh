#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, built on the stable toolchain; see README "Fuzzing").
#
#   hack/fuzz.sh [SECONDS] [TARGET...]   build, then run each target SECONDS (default 60)
#   hack/fuzz.sh --merge [TARGET...]     fold what runs found into fuzz/corpus/, minimized
#   hack/fuzz.sh --list                  the targets
#
# Each run starts from the committed corpus (fuzz/corpus/TARGET) and the inputs that once
# crashed (fuzz/regressions/TARGET), with a dictionary where one exists (fuzz/dict/). New
# inputs go to a work corpus under the cache, not into the checkout. A crash, panic, timeout
# (KMB_FUZZ_TIMEOUT s per input, default 10) or allocation over 2 GiB fails the run, naming
# the saved input and the command that replays it. Prints "fuzz: N passed, N failed".
#
# Environment: KMB_FUZZ_TARGET_DIR (build dir; default ~/.cache/kube-metrics-bridge/fuzz-
# <hash of the checkout path>), KMB_FUZZ_WORK (work corpora and crash inputs; default
# <build dir>/work).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

FUZZ_DIR=fuzz
TARGETS=(request selector promql template rules quantity convert)

merge=0
seconds=60
case "${1:-}" in
  --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
  --merge) merge=1; shift ;;
  ''|*[!0-9]*) ;;
  *) seconds=$1; shift ;;
esac
[ $# -eq 0 ] || TARGETS=("$@")

ensure_rust
apt_install_missing g++:g++

key=$(pwd -P | sha256sum | cut -c1-8)
export CARGO_TARGET_DIR="${KMB_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge/fuzz-$key}"
work="${KMB_FUZZ_WORK:-$CARGO_TARGET_DIR/work}"
mkdir -p "$CARGO_TARGET_DIR" "$work"
host=$(rustc -vV | sed -n 's/^host: //p')

# What cargo-fuzz passes for libFuzzer, minus the sanitizer (-Zsanitizer needs nightly; the
# code under test has no `unsafe`, so panics, aborts, timeouts and huge allocations are what
# there is to find). The SanitizerCoverage pass itself is stable. `--target` keeps these
# flags off build scripts and proc macros, which are not linked with libFuzzer.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
unset CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

echo "== fuzz: building ${#TARGETS[@]} target(s) (libFuzzer, stable $(rustc -V | cut -d' ' -f2); into $CARGO_TARGET_DIR)"
bins=()
for t in "${TARGETS[@]}"; do bins+=(--bin "$t"); done
start=$(date +%s)
# Not --locked: fuzz/Cargo.lock pins every version, but when the root package gains a
# dependency the lock must gain that edge, and cargo adds it (changing no pinned version).
cargo build --release --manifest-path "$FUZZ_DIR/Cargo.toml" --target "$host" "${bins[@]}"
echo "== fuzz: built in $(( $(date +%s) - start )) s"
bindir="$CARGO_TARGET_DIR/$host/release"

if [ "$merge" = 1 ]; then
  for t in "${TARGETS[@]}"; do
    mkdir -p "$work/$t/corpus" "$FUZZ_DIR/corpus/$t"
    merged=$(mktemp -d) candidates=$(mktemp -d)
    # Inputs up to KMB_FUZZ_MERGE_MAX_BYTES (default 1024) only: small inputs reach the same
    # code, replay faster and keep the checkout small.
    for d in "$FUZZ_DIR/corpus/$t" "$work/$t/corpus"; do
      find "$d" -type f -size -"$(( ${KMB_FUZZ_MERGE_MAX_BYTES:-1024} + 1 ))"c -exec cp -f -t "$candidates" {} +
    done
    # -merge=1 keeps the smallest set of inputs with the same coverage, from every dir given;
    # -use_counters=0 counts edges, not hit counts, which keeps the committed corpora small.
    "$bindir/$t" -merge=1 -use_counters=0 -rss_limit_mb=4096 "$merged" "$candidates" \
      2>"$work/$t/merge.log" || { tail -20 "$work/$t/merge.log"; exit 1; }
    rm -rf "$FUZZ_DIR/corpus/$t" "$candidates"
    mv "$merged" "$FUZZ_DIR/corpus/$t"
    chmod 755 "$FUZZ_DIR/corpus/$t"
    echo "$t: $(ls "$FUZZ_DIR/corpus/$t" | wc -l) inputs, $(du -sk --apparent-size "$FUZZ_DIR/corpus/$t" | cut -f1) KiB"
  done
  exit 0
fi

passed=0 failed=0 failures=()
for t in "${TARGETS[@]}"; do
  corpus="$work/$t/corpus" artifacts="$work/$t/artifacts" log="$work/$t/last.log"
  mkdir -p "$corpus" "$artifacts" "$FUZZ_DIR/corpus/$t"
  rm -f "$artifacts"/*
  args=(-max_total_time="$seconds" -timeout="${KMB_FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$artifacts/")
  # Value profiling (comparison operands as coverage) finds more in long runs but keeps
  # many more inputs; short runs (CI's) leave it off so the work corpus stays quick to load.
  [ "$seconds" -lt 60 ] || args+=(-use_value_profile=1)
  [ -f "$FUZZ_DIR/dict/$t.dict" ] && args+=(-dict="$FUZZ_DIR/dict/$t.dict")
  dirs=("$corpus" "$FUZZ_DIR/corpus/$t")
  [ -d "$FUZZ_DIR/regressions/$t" ] && dirs+=("$FUZZ_DIR/regressions/$t")
  status=0
  "$bindir/$t" "${args[@]}" "${dirs[@]}" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
  if [ "$status" = 0 ]; then
    passed=$((passed + 1))
    echo "fuzz $t: ok, ${seconds}s, ${execs:-?} runs (${rate:-?}/s), ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) + $(ls "$FUZZ_DIR/corpus/$t" | wc -l) committed"
  else
    failed=$((failed + 1))
    input=$(ls -t "$artifacts"/* 2>/dev/null | head -1 || true)
    failures+=("$t: ${input:-no input saved (exit $status)}")
    echo "fuzz $t: FAILED (exit $status) after ${execs:-?} runs; input: ${input:-none saved}"
    { grep -E -A12 "panicked at|ERROR: libFuzzer|==[0-9]+== ERROR" "$log" || tail -20 "$log"; } \
      | head -40 | sed 's/^/    /'
    echo "    full log: $log"
    if [ -n "$input" ]; then echo "    replay: $bindir/$t $input"; fi
  fi
done

for f in "${failures[@]}"; do echo "fuzz failure: $f"; done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
