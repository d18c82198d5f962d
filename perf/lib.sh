# Shared by the perf/ scripts (sourced, not run): waiting for a freshly started server.

# wait_ready BENCH ENDPOINT PID [retcd-bench flags…]: 0 once the server at ENDPOINT answers a
# linearizable Range (it has a leader and has replayed its log), 1 as soon as process PID is
# gone, or after 30 s.
wait_ready() {
  local bench=$1 ep=$2 pid=$3
  shift 3
  for _ in $(seq 1 300); do
    "$bench" --endpoints "$ep" "$@" --output csv range ready --total 1 >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# wait_released PORT: 0 once nothing listens on PORT any more, 1 after 5 s (call it for the
# client and the peer port). A server killed a moment ago keeps its listening sockets for a few
# ms after the process is gone (its io_uring is torn down later), and a server started on the
# same port in that window had its first client connection refused right after it answered
# wait_ready (seen in perf/ab, 1 run in 25). Without `ss` it returns at once.
wait_released() {
  command -v ss >/dev/null || return 0
  for _ in $(seq 1 500); do
    [ -z "$(ss -Hltn "sport = :$1")" ] && return 0
    sleep 0.01
  done
  return 1
}
