#!/usr/bin/env bash
# Compares two builds of the engine on compaction passes that destroy due
# keys, pass by pass, on a machine whose speed drifts (benches/src/bin/
# due_key_passes.rs). Each build's binary runs in its own process; the two
# take turns, one pass each. The pair runs twice, each build first once,
# because the second process of a pair runs a few per cent faster.
#
#   cargo build --release -p shredkv-benches --bin due_key_passes
#   cp target/release/due_key_passes /tmp/build-a   # then build B and copy it too
#   benches/alternate.sh /tmp/build-a /tmp/build-b [ACCOUNTS] [DAYS]
#
# Prints, for each order, the median over the days without a sweep of B's
# CPU a destroyed key over A's on the same day, then their geometric mean
# with the order's advantage cancelled: B's cost as a fraction of A's.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BUILD_A BUILD_B [ACCOUNTS] [DAYS]" >&2; exit 2; }
a=$1 b=$2 accounts=${3:-8000} days=${4:-16}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkfifo "$work/first" "$work/second"

# Runs $1 then $2 in turn; prints the median of $2's CPU over $1's, per day.
pair() {
    "$1" "$accounts" "$days" --token-in "$work/first" --token-out "$work/second" > "$work/one" &
    local one=$!
    "$2" "$accounts" "$days" --token-in "$work/second" --token-out "$work/first" > "$work/two" &
    local two=$!
    exec 3<> "$work/first"
    printf x >&3
    wait "$one" "$two"
    exec 3>&-
    # "day D: K keys destroyed, R records removed, W ms, C us cpu a key"
    paste "$work/one" "$work/two" | awk '$6 == 0 && $21 == 0 { print $26 / $11 }' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

b_after_a=$(pair "$a" "$b")
a_after_b=$(pair "$b" "$a")
echo "B/A with A first: $b_after_a"
echo "A/B with B first: $a_after_b"
awk -v x="$b_after_a" -v y="$a_after_b" 'BEGIN { printf "B costs %.3f of A (CPU a destroyed key)\n", sqrt(x / y) }'
