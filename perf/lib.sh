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
