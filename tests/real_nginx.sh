#!/bin/bash
# Debian's nginx on a keyed heap (shmheap(7), "Who attaches a keyed heap"):
# the master has the heap; nginx -t and nginx -s reload, run with the
# server's environment while it runs, are second instances of the heap's
# program: they work, on private heaps, and leave the heap to the master,
# which reloads and serves on.  After nginx -s quit the heap was left
# cleanly, and the next start re-attaches it.
. "$(dirname "$0")/real_common.sh"

NGINX=/usr/sbin/nginx
if [ ! -x "$NGINX" ]; then
  [ "${CI:-}" = true ] && fail "$NGINX is missing: .ci/run installs Debian's nginx"
  echo "SKIP: $NGINX is not installed (apt-get install nginx)"
  exit 77
fi
DUMP=$top_builddir/tools/shmheap-dump
H=$(heap_name nginx)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$TMP/www" "$TMP/logs"
echo "served from the shm heap" >"$TMP/www/index.html"
user=
[ "$(id -u)" -eq 0 ] && user="user root;"
cat >"$TMP/nginx.conf" <<CONF
$user
daemon off;
worker_processes 2;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log info;
events { worker_connections 64; }
http {
  access_log $TMP/logs/access.log;
  client_body_temp_path $TMP/body;
  proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fastcgi;
  uwsgi_temp_path $TMP/uwsgi;
  scgi_temp_path $TMP/scgi;
  server { listen 127.0.0.1:$PORT; root $TMP/www; }
}
CONF
ENV=(env LD_PRELOAD="$SHMHEAP_LIB" SHMHEAP_KEY="$H" SHMHEAP_SIZE=256M SHMHEAP_VERBOSE=1)
NG=("$NGINX" -p "$TMP" -e "$TMP/logs/early.log" -c "$TMP/nginx.conf")

master=
stop_master() {
  [ -n "$master" ] && kill -KILL "$master" 2>/dev/null || :
  pkill -KILL -f "nginx: worker process" -P "$master" 2>/dev/null || :
}
trap 'stop_master; cleanup' EXIT

get_page() { # the page, through a connection of bash's own
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
  printf 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' >&3
  cat <&3
  exec 3<&-
}

start() { # start N: the master in the background, until it serves
  "${ENV[@]}" "${NG[@]}" >"$TMP/master$1.out" 2>"$TMP/master$1.err" </dev/null &
  master=$!
  for _ in $(seq 100); do
    get_page >"$TMP/page" 2>/dev/null && grep -q "served from the shm heap" "$TMP/page" && return 0
    kill -0 "$master" 2>/dev/null || break
    sleep 0.1
  done
  show "$TMP/master$1.err"
  show "$TMP/logs/error.log"
  fail "nginx (start $1) does not serve on port $PORT"
}

start 1
grep -q "^libshmheap: attached key=0x[0-9a-f]* name=$H .* fresh pid=$master" "$TMP/master1.err" ||
  { show "$TMP/master1.err"; fail "the master (pid $master) did not form the keyed heap"; }
sed -n "s/^libshmheap: attached key=\(0x[0-9a-fA-F]*\) name=$H .*/\1/p" "$TMP/master1.err" | head -n 1 >>"$TMP/keys"

# nginx -t: a second instance while the heap is in use
set +e
"${ENV[@]}" "${NG[@]}" -t >"$TMP/t.out" 2>"$TMP/t.err" </dev/null
st=$?
set -e
[ "$st" -eq 0 ] || { show "$TMP/t.err"; fail "nginx -t exits $st while the server runs on the heap"; }
grep -q "test is successful" "$TMP/t.err" || { show "$TMP/t.err"; fail "nginx -t: no 'test is successful'"; }
grep -q "in use by pid $master (/usr/sbin/nginx); using a private heap" "$TMP/t.err" ||
  { show "$TMP/t.err"; fail "nginx -t: SHMHEAP_VERBOSE does not say it runs on a private heap beside the master"; }
echo "nginx -t: exit 0 on a private heap, the master (pid $master) keeps the heap"

# nginx -s reload: the master starts new workers with the new configuration
workers_before=$(pgrep -P "$master" | sort | tr '\n' ' ')
sed -i "s|root $TMP/www;|root $TMP/www; add_header X-Reloaded yes;|" "$TMP/nginx.conf"
set +e
"${ENV[@]}" "${NG[@]}" -s reload >"$TMP/reload.out" 2>"$TMP/reload.err" </dev/null
st=$?
set -e
[ "$st" -eq 0 ] || { show "$TMP/reload.err"; fail "nginx -s reload exits $st while the server runs on the heap"; }
for _ in $(seq 100); do
  get_page >"$TMP/page" 2>/dev/null && grep -q "X-Reloaded: yes" "$TMP/page" && break
  sleep 0.1
done
grep -q "X-Reloaded: yes" "$TMP/page" || { show "$TMP/logs/error.log"; fail "the master did not reload its configuration"; }
workers_after=$(pgrep -P "$master" | sort | tr '\n' ' ')
[ "$workers_before" != "$workers_after" ] || fail "the same workers after the reload: $workers_after"
kill -0 "$master" || fail "the master is gone after the reload"
"$DUMP" "$H" >"$TMP/dump.live" || { show "$TMP/dump.live"; fail "shmheap-dump cannot read the live heap"; }
echo "nginx -s reload: exit 0; the master reloaded (workers $workers_before-> $workers_after) and serves on"

# nginx -s quit: the master leaves the heap cleanly; the next start re-attaches it
set +e
"${ENV[@]}" "${NG[@]}" -s quit >"$TMP/quit.out" 2>"$TMP/quit.err" </dev/null
st=$?
wait "$master"
mst=$?
set -e
[ "$st" -eq 0 ] || { show "$TMP/quit.err"; fail "nginx -s quit exits $st"; }
[ "$mst" -eq 0 ] || { show "$TMP/master1.err"; fail "the master exited $mst after nginx -s quit"; }
state=$("$DUMP" "$H" | sed -n 's/^state *//p')
case $state in "left cleanly by pid $master (program nginx)") ;; *) "$DUMP" "$H" >&2; fail "after nginx -s quit the heap's state is '$state'" ;; esac
start 2
grep -q "^libshmheap: attached key=0x[0-9a-f]* name=$H .* re-attached (left cleanly) pid=$master" "$TMP/master2.err" ||
  { show "$TMP/master2.err"; fail "the second start did not re-attach the heap the first left"; }
set +e
"${ENV[@]}" "${NG[@]}" -s quit >/dev/null 2>&1 </dev/null
wait "$master"
mst=$?
set -e
master=
[ "$mst" -eq 0 ] || fail "the second master exited $mst after nginx -s quit"
"$DUMP" --remove "$H" >/dev/null
echo "nginx -s quit: the heap was left cleanly, and the next start re-attached it"
