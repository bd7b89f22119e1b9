# Helpers for the end-to-end scripts (sourced; not a test itself).
# Usage in a test: source "$(dirname "$0")/lib.sh" "$@"  ->  LINEA, SRC, WORK set; WORK removed at exit.
LINEA=$1
SRC=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# Fails unless command exits non-zero and its stderr contains every given string.
expect_error() {
  local out
  if out=$("$@" 2>&1); then fail "expected failure: $*"; fi
  echo "$out"
  LAST_ERROR=$out
}
contains() { grep -qF -- "$2" <<<"$1" || fail "expected '$2' in: $1"; }
# Text files of the fortunes package for tests that prepare their own data ('%' separates).
FORTUNE_TEXTS=(/usr/share/games/fortunes/fortunes /usr/share/games/fortunes/literature)
# The embedded corpus (prepared by launch/setup.sh), or a fresh one from the fortunes package.
corpus() {
  if [ -f "$SRC/data/fortunes.tokens" ]; then echo "$SRC/data/fortunes.tokens"; return; fi
  "$LINEA" prepare-data --separator % --output "$WORK/fortunes.tokens" "${FORTUNE_TEXTS[@]}" \
    >/dev/null
  echo "$WORK/fortunes.tokens"
}
# First and last logged loss of a metrics.jsonl.
first_loss() { head -1 "$1" | sed -E 's/.*"loss":([0-9.eE+-]+).*/\1/'; }
last_loss() { tail -1 "$1" | sed -E 's/.*"loss":([0-9.eE+-]+).*/\1/'; }
# "step loss" per training line of a metrics.jsonl, for steps after $2.
losses_after() {
  grep '"loss":' "$1" | while read -r line; do
    echo "$(sed -E 's/.*"step":([0-9]+).*/\1/' <<<"$line") $(sed -E 's/.*"loss":([^,}]+).*/\1/' <<<"$line")"
  done | awk -v s="$2" '$1 > s'
}
