#!/bin/sh
# shmheap-dump --watch (issue 18, item 3), on a real terminal: tmux (on its
# own socket, -L, so no other tmux is touched) runs the view in a pane
# beside a python3 that holds a keyed heap.  Checked from tmux's side of the
# terminal: the view draws on the alternate screen with the cursor hidden,
# redraws in place (one frame on the screen however many were drawn) and
# follows the heap as it grows; it fits a resized window and comes back when
# the window grows again; q (exit 0), Ctrl-C (130), Ctrl-\ (131) and SIGTERM (143) each
# end it with the main screen, the cursor and the terminal's modes (stty -g)
# as they were; Ctrl-Z under a job-control shell stops it with the terminal
# given back, and fg brings the view back; a SIGHUP its caller ignores
# (nohup) is ignored.  Without a terminal it prints
# plain blocks; a number after --watch is the interval only when the heap is
# named elsewhere; it ends by itself when the heap it shows is removed (a
# keyed heap by ipcrm, a private heap when its last process exits); bad
# arguments exit 2 with their own message.  tmux is required under CI=true.
. "$(dirname "$0")/real_common.sh"
TOOL=$top_builddir/tools/shmheap-dump
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if ! command -v tmux >/dev/null 2>&1; then
  [ "${CI:-}" = true ] && fail "tmux is not installed (.ci/run installs it)"
  echo "SKIP: tmux is not installed (Debian's tmux package): the terminal cases need it"
  exit 77
fi
SOCK=shmheap-test-$$
tm() { tmux -L "$SOCK" "$@"; }
# On any way out the python3 processes end too: they wait for $TMP/stop,
# which cleanup removes with $TMP, perhaps before they have seen it, and
# each holds a segment.  Every command here must succeed: set -e holds in
# the trap too, and kill-server fails when tmux never started.
holder= priv=
trap 'tmux -L "$SOCK" kill-server 2>/dev/null || :; touch "$TMP/stop"; for p in $holder $priv; do kill "$p" 2>/dev/null || :; done; cleanup' EXIT
H=$(heap_name watch)

# The holder: a keyed heap, grown by 60 MB when $TMP/grow appears.
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$H SHMHEAP_SIZE=256M SHMHEAP_VERBOSE=1 "$PY" -c '
import os, sys, time
t = sys.argv[1]
x = [b"a" * 100 for i in range(1000)]
print("ready", flush=True)
while not os.path.exists(t + "/grow"): time.sleep(0.05)
y = [bytes([i % 251]) * 3000 for i in range(20000)]
print("grown", flush=True)
while not os.path.exists(t + "/stop"): time.sleep(0.05)' "$TMP" >"$TMP/holder.out" 2>"$TMP/holder.err" </dev/null &
holder=$!
for _ in $(seq 300); do grep -q ready "$TMP/holder.out" && break; sleep 0.1; done
grep -q ready "$TMP/holder.out" || { show "$TMP/holder.err"; fail "the holder did not start"; }
key=$(sed -n "s/^libshmheap: attached key=\(0x[0-9a-fA-F]*\) name=$H .*/\1/p" "$TMP/holder.err" | head -n 1)
[ -n "$key" ] || { show "$TMP/holder.err"; fail "no attach line from the holder"; }
echo "$key" >>"$TMP/keys"
kshmid=$(sed -n "s/^libshmheap: attached key=$key name=$H shmid=\([0-9]*\).*/\1/p" "$TMP/holder.err" | head -n 1)
[ -n "$kshmid" ] || { show "$TMP/holder.err"; fail "no shmid in the holder's attach line"; }

# What runs in each pane: the view between two stty -g, its exit status
# kept.  The trap makes the shell wait for the view on Ctrl-C (it is in the
# same process group) instead of dying first; children get SIGINT's default.
cat >"$TMP/pane.sh" <<EOF
trap ':' INT QUIT
ulimit -c 0
[ "\$2" = nohup ] && trap '' HUP # ignored, as nohup leaves it: the view inherits that
echo BEFORE-WATCH
stty -g >"$TMP/\$1.stty.before"
"$TOOL" --watch 0.2 "$H"
echo \$? >"$TMP/\$1.rc"
stty -g >"$TMP/\$1.stty.after"
echo AFTER-WATCH
exec sleep 300
EOF

screen() { tm capture-pane -p -t "$1"; }
joined() { tm capture-pane -p -J -t "$1"; } # lines wrapped by the terminal as one
flag() { tm display-message -p -t "$1" "$2"; }
wait_for() { # wait_for CASE WHAT COMMAND...: until COMMAND succeeds, 10 s at most
  _c=$1 _w=$2
  shift 2
  for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done
  screen "$_c" >"$TMP/$_c.screen" 2>&1 || :
  show "$TMP/$_c.screen"
  fail "$_c: $_w"
}
has() { screen "$1" | grep -q -- "$2"; }
alt_is() { [ "$(flag "$1" '#{alternate_on}')" = "$2" ]; }
rc_is() { [ -s "$TMP/$1.rc" ]; }

start() { # start CASE WIDTH HEIGHT [nohup]
  tm new-session -d -s "$1" -x "$2" -y "$3" "sh $TMP/pane.sh $1 ${4:-}"
  wait_for "$1" "no frame of the view on the screen" has "$1" "^heap .*name $H"
}

# The view is gone and the terminal is as it was before it.
restored() { # restored CASE RC
  wait_for "$1" "the view did not end" rc_is "$1"
  [ "$(cat "$TMP/$1.rc")" = "$2" ] || fail "$1: the view exits $(cat "$TMP/$1.rc"), not $2"
  wait_for "$1" "AFTER-WATCH is not on the screen" has "$1" AFTER-WATCH
  [ "$(flag "$1" '#{alternate_on}')" = 0 ] || fail "$1: the alternate screen is still on"
  [ "$(flag "$1" '#{cursor_flag}')" = 1 ] || fail "$1: the cursor is still hidden"
  has "$1" BEFORE-WATCH || fail "$1: the shell's screen did not come back (BEFORE-WATCH is gone)"
  ! has "$1" "BLOCKS USED" || fail "$1: the view's lines are left on the main screen"
  cmp -s "$TMP/$1.stty.before" "$TMP/$1.stty.after" ||
    fail "$1: the terminal's modes differ after the view: $(cat "$TMP/$1.stty.before") then $(cat "$TMP/$1.stty.after")"
  echo "$1: exit $2, main screen back, cursor shown, stty -g unchanged"
}

# A session of its own keeps the server up between the cases: a bare
# start-server exits at once with no session, mostly before the next
# command, which then starts a second server without -f /dev/null.  No
# global window-size manual: under it tmux 3.3a's server dereferences a
# NULL window when a second session is made with -x/-y (tmux pull request
# 4849; the CI failure "server exited unexpectedly"), and resize-window
# sets manual on its own window anyway.
tm -f /dev/null new-session -d -s keep -x 80 -y 24 "exec sleep 3600" \; set -g history-limit 100 || fail "tmux does not start"

# ---- q, with the heap growing under the view ----
start q 120 80
[ "$(flag q '#{alternate_on}')" = 1 ] || fail "q: the view is not on the alternate screen"
[ "$(flag q '#{cursor_flag}')" = 0 ] || fail "q: the cursor is not hidden"
screen q | grep -Eq "^ +$holder +(sleeping|running) +python3" || { screen q >"$TMP/q.s"; show "$TMP/q.s"; fail "q: the holder (pid $holder) is not listed as attached"; }
touch "$TMP/grow"
for _ in $(seq 300); do grep -q grown "$TMP/holder.out" && break; sleep 0.1; done
grown() { screen q | awk '/^in use/ { v = $3; if (v ~ /M$/ && v + 0 >= 55) ok = 1 } END { exit !ok }'; }
wait_for q "the in-use figure did not follow the heap to 60 MB" grown
all_grown() { screen q | grep -Eq "^ +3072 +[0-9]+ +2[0-9]{4} "; }
wait_for q "the class table does not come to show the 20000 blocks of 3000 bytes" all_grown
n=$(screen q | grep -c "^heap ")
[ "$n" = 1 ] || fail "q: $n frames on the screen after the heap grew, not 1 (not redrawn in place)"
n=$(screen q | grep -c "^ *CLASS ")
[ "$n" = 1 ] || fail "q: $n class tables on the screen, not 1"
tm send-keys -t q q
restored q 0

# ---- a window made small and large again ----
start resize 120 80
tm resize-window -t resize -x 50 -y 15
wait_for resize "the view did not cut itself to a 50x15 window" has resize "more line(s)"
long=$(joined resize | awk 'length($0) > 50' | wc -l)
[ "$long" = 0 ] || fail "resize: $long line(s) wider than the 50-column window (wrapped, not cut)"
n=$(screen resize | grep -c .)
[ "$n" -le 15 ] || fail "resize: $n lines on a 15-row window"
tm resize-window -t resize -x 120 -y 80
uncut() { ! has resize "more line(s)" && [ "$(screen resize | grep -c .)" -gt 15 ]; }
wait_for resize "the view did not grow back with the window" uncut
tm send-keys -t resize q
restored resize 0

# ---- Ctrl-C: the terminal put back, then SIGINT's own death (130) ----
start ctrlc 120 80
tm send-keys -t ctrlc C-c
restored ctrlc 130

# ---- Ctrl-Z: the terminal back while stopped, the view back on fg ----
# As from an interactive shell: bash with job control runs the view as a
# job of its own in the foreground, sees it stop (148 = 128 + SIGTSTP),
# and resumes it with fg when the test says.  (A job-control-less sh would
# leave the view in an orphaned process group, where the kernel discards
# SIGTSTP's stop, for the view as for any program.)
cat >"$TMP/pane-jc.sh" <<EOF
set -m
echo BEFORE-WATCH
stty -g >"$TMP/\$1.stty.before"
"$TOOL" --watch 0.2 "$H"
echo \$? >"$TMP/\$1.stopped"
while [ ! -e "$TMP/\$1.cont" ]; do sleep 0.1; done
fg >/dev/null
echo \$? >"$TMP/\$1.rc"
stty -g >"$TMP/\$1.stty.after"
echo AFTER-WATCH
exec sleep 300
EOF
tm new-session -d -s ctrlz -x 120 -y 80 "bash --norc --noprofile $TMP/pane-jc.sh ctrlz"
wait_for ctrlz "no frame of the view on the screen" has ctrlz "^heap .*name $H"
panepid=$(flag ctrlz '#{pane_pid}')
view=$(pgrep -P "$panepid" -f -- "--watch")
[ -n "$view" ] || fail "ctrlz: no view process under the pane's shell"
tm send-keys -t ctrlz C-z
stopped_rc() { [ -s "$TMP/ctrlz.stopped" ]; }
wait_for ctrlz "the shell did not see the view stop" stopped_rc
[ "$(cat "$TMP/ctrlz.stopped")" = 148 ] || fail "ctrlz: the shell saw status $(cat "$TMP/ctrlz.stopped"), not 148 (stopped by SIGTSTP)"
is_stopped() { grep -q '^State:.*T' "/proc/$view/status"; }
wait_for ctrlz "the view is not stopped after Ctrl-Z ($(grep State "/proc/$view/status"))" is_stopped
wait_for ctrlz "the alternate screen stays on while the view is stopped" alt_is ctrlz 0
[ "$(flag ctrlz '#{cursor_flag}')" = 1 ] || fail "ctrlz: the cursor is hidden while the view is stopped"
touch "$TMP/ctrlz.cont"
wait_for ctrlz "the view did not come back after fg" alt_is ctrlz 1
wait_for ctrlz "no frame after fg" has ctrlz "^heap .*name $H"
tm send-keys -t ctrlz q
restored ctrlz 0

# ---- SIGTERM: the terminal put back, then the signal's own death ----
start term 120 80
view=$(pgrep -P "$(flag term '#{pane_pid}')" -f -- "--watch")
[ -n "$view" ] || fail "term: no view process under the pane's shell"
kill -TERM "$view"
restored term 143

# ---- Ctrl-\: SIGQUIT's own death (131), the terminal put back first ----
start quit 120 80
tm send-keys -t quit 'C-\'
restored quit 131

# ---- a SIGHUP the caller ignores stays ignored ----
start nohup 120 80 nohup
view=$(pgrep -P "$(flag nohup '#{pane_pid}')" -f -- "--watch")
[ -n "$view" ] || fail "nohup: no view process under the pane's shell"
kill -HUP "$view"
sleep 0.5
kill -0 "$view" 2>/dev/null || fail "nohup: the view ended on a SIGHUP its caller ignores"
alt_is nohup 1 || fail "nohup: the view left the screen on an ignored SIGHUP"
tm send-keys -t nohup q
restored nohup 0

# ---- not a terminal: plain blocks, no escape sequences ----
"$TOOL" --watch 0.2 --count 3 "$H" >"$TMP/plain.out" 2>"$TMP/plain.err" </dev/null || { show "$TMP/plain.err"; fail "--watch into a file exits $?"; }
n=$(grep -c "^shmheap-dump --watch $H, every 0.2s  [0-9]\{4\}-[0-9][0-9]-[0-9][0-9] " "$TMP/plain.out" || :)
[ "$n" = 3 ] || { show "$TMP/plain.out"; fail "--count 3 into a file printed $n titled blocks, not 3"; }
[ "$(grep -c "^heap " "$TMP/plain.out")" = 3 ] || fail "--count 3 into a file printed other than 3 summaries"
esc=$(printf '\033')
! grep -q "$esc" "$TMP/plain.out" || fail "--watch into a file wrote escape sequences"
echo "plain: 3 blocks, no escape sequences"

# ---- where SECONDS is and where the heap is ----
# A number after --watch is the interval only when the heap is named
# elsewhere; alone it is the heap (a key is a number too).
"$TOOL" --watch "$key" --count 1 >"$TMP/k.out" 2>"$TMP/k.err" </dev/null || { show "$TMP/k.err"; fail "--watch KEY --count 1 exits $?"; }
grep -q "^shmheap-dump --watch $key, every 1s " "$TMP/k.out" || { show "$TMP/k.out"; fail "--watch $key --count 1 did not show key $key every second"; }
"$TOOL" --shmid "$kshmid" --watch 0.3 --count 1 >"$TMP/s.out" 2>"$TMP/s.err" </dev/null || { show "$TMP/s.err"; fail "--shmid ID --watch 0.3 exits $?"; }
grep -q "^shmheap-dump --watch --shmid $kshmid, every 0.3s " "$TMP/s.out" || { show "$TMP/s.out"; fail "--shmid ID --watch 0.3 did not take 0.3 as the interval"; }
echo "arguments: --watch KEY, --shmid ID --watch SECONDS"

# ---- a keyed heap removed under the view: it ends by itself ----
touch "$TMP/stop"
wait "$holder" || fail "the holder exits $?"
"$TOOL" --watch 0.2 "$H" >"$TMP/rm.out" 2>&1 </dev/null &
w=$!
for _ in $(seq 100); do grep -q "^heap " "$TMP/rm.out" && break; sleep 0.1; done
ipcrm -M "$key" || fail "ipcrm -M $key failed"
for _ in $(seq 100); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
kill -0 "$w" 2>/dev/null && { kill "$w"; fail "the view goes on after its keyed heap was removed"; }
wait "$w" || fail "the view of a removed heap exits $?"
grep -q "removed, and the key names no segment now" "$TMP/rm.out" || { show "$TMP/rm.out"; fail "the view does not say its heap was removed"; }
echo "keyed heap removed: the view said so and ended"

# ---- a private heap: its processes from /proc, and its end ----
rm -f "$TMP/stop"
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_SIZE=64M SHMHEAP_VERBOSE=1 "$PY" -c '
import os, sys, time
t = sys.argv[1]
print("ready", flush=True)
while not os.path.exists(t + "/stop"): time.sleep(0.05)' "$TMP" >"$TMP/priv.out" 2>"$TMP/priv.err" </dev/null &
priv=$!
for _ in $(seq 300); do grep -q ready "$TMP/priv.out" && break; sleep 0.1; done
shmid=$(sed -n 's/^libshmheap: attached .*shmid=\([0-9]*\).*/\1/p' "$TMP/priv.err" | head -n 1)
[ -n "$shmid" ] || { show "$TMP/priv.err"; fail "no shmid in the private heap's attach line"; }
"$TOOL" --watch 0.2 --shmid "$shmid" >"$TMP/pw.out" 2>&1 </dev/null &
w=$!
for _ in $(seq 100); do grep -q "^processes" "$TMP/pw.out" && break; sleep 0.1; done
grep -q "^processes  1 attached" "$TMP/pw.out" || { show "$TMP/pw.out"; fail "the private heap's view does not count its 1 process"; }
grep -Eq "^ +$priv +(sleeping|running) +python3" "$TMP/pw.out" || { show "$TMP/pw.out"; fail "the private heap's view does not list pid $priv"; }
touch "$TMP/stop"
wait "$priv" || fail "the private heap's process exits $?"
for _ in $(seq 100); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
kill -0 "$w" 2>/dev/null && { kill "$w"; fail "the view goes on after the private heap's last process ended"; }
wait "$w" || fail "the view of a private heap exits $?"
grep -v '^$' "$TMP/pw.out" | tail -n 1 | grep -q "it is gone when this view ends" || { show "$TMP/pw.out"; fail "the view does not say the private heap is gone"; }
echo "private heap: pid $priv listed from /proc; the view ended with the heap"

# ---- bad arguments: exit 2 and the message that names the fault ----
bad() { # bad MESSAGE ARGS...
  _m=$1
  shift
  set +e
  "$TOOL" "$@" >"$TMP/bad.out" 2>"$TMP/bad.err" </dev/null
  st=$?
  set -e
  [ "$st" = 2 ] || fail "shmheap-dump $* exits $st, not 2"
  grep -qF -- "$_m" "$TMP/bad.err" || { show "$TMP/bad.err"; fail "shmheap-dump $* does not say: $_m"; }
}
bad "--watch 0: not a number of seconds from 0.1 to 86400" --watch 0 "$key"
bad "--watch 100000: not a number of seconds" --watch 100000 "$key"
bad "--watch 1e999: not a number of seconds" --watch 1e999 "$key"
bad "--count 0: not a number of frames" --watch --count 0 "$key"
bad "--watch draws text: --json goes without it" --watch --json "$key"
bad "--count goes with --watch" --count 2 "$key"
bad "--watch needs a heap" --watch
bad "name the heap once" --watch 1 "$key" --shmid "$kshmid"
echo "bad arguments: exit 2, each with its message"
