#!/bin/sh
# bash under libshmheap: subshells must keep fork's usual (copy) meaning,
# pipelines, command substitution, many subshells.
. "$(dirname "$0")/real_common.sh"

BASH_BIN=$(command -v bash) || fail "bash is not installed"

cat >"$TMP/script.sh" <<'SCRIPT'
x=1; (x=2); echo "subshell: x=$x"
y=outer; y2=$(y=inner; echo "$y"); echo "cmdsubst: $y2 $y"
echo "pipeline: $(seq 1 20000 | awk '{ s += $1 } END { print s }')"
echo "pipeline2: $(printf '%s\n' c b a | sort | tr '\n' ' ')"
n=0
for i in $(seq 200); do
  v=$( (echo "$i") )
  n=$((n + v))
done
echo "200 subshells: $n"
declare -A map
for i in $(seq 1 3000); do map[k$i]=$(( i * i )); done
echo "assoc: ${#map[@]} ${map[k3000]}"
s=
for i in $(seq 1 5000); do s="$s$i,"; done
echo "string: ${#s}"
arr=()
for i in $(seq 1 10000); do arr+=("item$i"); done
echo "array: ${#arr[@]} ${arr[9999]}"
f() { local a=$1; if [ "$a" -gt 0 ]; then f $((a - 1)); echo -n "$a "; fi; }
echo "recursion: $(f 30 | wc -w)"
( sleep 0.05; echo background ) & wait
echo "done"
SCRIPT

run_ref bash "$BASH_BIN" "$TMP/script.sh"
[ "$status" -eq 0 ] || { show "$TMP/bash.ref.err"; fail "the script fails without the library"; }
run_pre bash "$BASH_BIN" "$TMP/script.sh"
[ "$status" -eq 0 ] || { show "$TMP/bash.pre.err"; fail "bash exits $status under the preload"; }
grep -qx 'subshell: x=1' "$TMP/bash.pre.out" ||
  fail "x=1; (x=2); echo \$x does not print 1 under the preload: a subshell wrote its parent's heap"
same_stdout bash
lib_free_stderr bash >"$TMP/bash.pre.err2"
cmp -s "$TMP/bash.ref.err" "$TMP/bash.pre.err2" || { show "$TMP/bash.pre.err2"; fail "bash printed errors under the preload"; }
check_used bash
cat "$TMP/bash.pre.out"
echo "PASS: bash under libshmheap"
