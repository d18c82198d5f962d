#!/usr/bin/env bash
# Engine benchmarks with their baseline, measured in the same run on the same disk (perf/README.md):
#
#   1. fio's fdatasync rate on the filesystem the WAL bench writes to: once buffered (etcd's disk
#      check), then O_DIRECT like the WAL, alternating with the WAL bench:
#        fio direct, wal bench, fio direct, wal bench, ..., fio direct   (ROUNDS wal rounds)
#      so that every WAL run is bracketed by a baseline taken just before and just after it, and a
#      disk whose speed drifts (shared machine, noisy neighbours) shows up as drift, not as a ratio;
#   2. cargo bench -p retcd-engine --bench wal   (group commit with 1/16/256 writers), each round;
#   3. cargo bench -p retcd-engine --bench btree (1M keys: insert, get, scan, file size, RSS);
#
# and writes perf/results/<date>-<host>-engine.md with the machine, the exact commands and all the
# numbers. Usage: perf/engine.sh   (from anywhere; installs fio and jq with apt-get if missing)
#
# Environment: RETCD_BENCH_DIR (where fio and the benches write; default target/tmp/perf-engine,
# which must not be a tmpfs), RETCD_BENCH_SECS (seconds per WAL writer count, default 2),
# FIO_RUNTIME (seconds per fio direct run, default 3; the buffered one runs 10), ROUNDS (default 5),
# SETTLE (seconds of pause, after a sync of the filesystem, before each measurement; default 2).
# Short rounds keep each WAL run close in time to its baseline; the summary takes the median.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bench_dir="${RETCD_BENCH_DIR:-$root/target/tmp/perf-engine}"
bench_secs="${RETCD_BENCH_SECS:-2}"
fio_runtime="${FIO_RUNTIME:-3}"
rounds="${ROUNDS:-5}"
host="$(hostname -s 2>/dev/null || uname -n)"
out="perf/results/$(date +%Y-%m-%d)-${host}-engine.md"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$bench_dir/fio"' EXIT

need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v jq >/dev/null 2>&1 || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$bench_dir"
if [ "$(stat -f -c %T "$bench_dir")" = tmpfs ] || [ "$(stat -f -c %T "$bench_dir")" = ramfs ]; then
  echo "$bench_dir is on a tmpfs: fdatasync costs nothing there; set RETCD_BENCH_DIR to a disk" >&2
  exit 1
fi
export RETCD_BENCH_DIR="$bench_dir"

# Build first so that compiling does not overlap the measurements.
cargo bench -p retcd-engine --bench wal --bench btree --no-run >&2

# --- commands --------------------------------------------------------------------------------
# buffered: etcd's documented disk check (write + fdatasync per 4 KiB, page cache, fresh file).
# direct:   what one WAL append does: an O_DIRECT 4 KiB write + fdatasync into a file already
#           written (--overwrite=1 lays it out first, as the WAL zero-fills its segments).
fio_common="--rw=write --bs=4k --size=64m --fdatasync=1 --ioengine=sync --time_based --output-format=json"
fio_cmd_buffered="fio --name=fdatasync-buffered --directory=$bench_dir/fio $fio_common --runtime=10"
fio_cmd_direct="fio --name=fdatasync-direct --directory=$bench_dir/fio $fio_common --runtime=$fio_runtime --direct=1 --overwrite=1"
wal_cmd="RETCD_BENCH_DIR=$bench_dir RETCD_BENCH_SECS=$bench_secs cargo bench -p retcd-engine --bench wal"
btree_cmd="RETCD_BENCH_DIR=$bench_dir cargo bench -p retcd-engine --bench btree"

# Lets the disk finish the previous step's writes (a WAL round leaves hundreds of MiB written and
# deleted) so that they do not slow down the next measurement.
settle() {
  sync -f "$bench_dir"
  sleep "${SETTLE:-2}"
}
run_fio() { # name command
  rm -rf "$bench_dir/fio"
  mkdir -p "$bench_dir/fio"
  settle
  echo "+ $2" >&2
  $2 >"$work/$1.json"
}
run_bench() { # name (wal|btree) output-name
  cargo bench -p retcd-engine --bench "$1" 2>"$work/$2.err" | tee "$work/$2.md" ||
    { cat "$work/$2.err" >&2; exit 1; }
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fio_iops() { jq -r '.jobs[0].write.iops | floor' "$work/$1.json"; }
fio_row() { # name -> markdown row
  jq -r --arg n "$1" '.jobs[0] as $j | "| \($n) | \($j.write.iops | floor) | \($j.write.clat_ns.mean / 1000 | floor) | \($j.sync.lat_ns.mean / 1000 | floor) | \($j.sync.lat_ns.percentile["50.000000"] / 1000 | floor) | \($j.sync.lat_ns.percentile["99.000000"] / 1000 | floor) | \($j.sync.lat_ns.percentile["99.900000"] / 1000 | floor) |"' "$work/$1.json"
}

# --- measurements ----------------------------------------------------------------------------
load_before="$(cat /proc/loadavg)"
io_before="$(grep some /proc/pressure/io 2>/dev/null || echo n/a)"
run_fio buffered "$fio_cmd_buffered"
for r in $(seq 1 "$rounds"); do
  run_fio "direct-$r" "$fio_cmd_direct"
  echo "+ $wal_cmd   # round $r" >&2
  rm -rf "$bench_dir/fio"
  settle
  RETCD_BENCH_SECS="$bench_secs" run_bench wal "wal-$r"
done
run_fio "direct-$((rounds + 1))" "$fio_cmd_direct"
echo "+ $btree_cmd" >&2
rm -rf "$bench_dir/fio"
settle
run_bench btree btree
load_after="$(cat /proc/loadavg)"
io_after="$(grep some /proc/pressure/io 2>/dev/null || echo n/a)"

# One line per (round, writer count): round, then the WAL table's columns, then the fio rates
# before and after that round.
: >"$work/wal-rows"
: >"$work/raw-rows"
for r in $(seq 1 "$rounds"); do
  before="$(fio_iops "direct-$r")"
  after="$(fio_iops "direct-$((r + 1))")"
  awk -F'|' -v r="$r" -v b="$before" -v a="$after" '/^\| [0-9]/ {
      gsub(/ /, "", $9)
      print r, $2 + 0, $3 + 0, $4 + 0, $5 + 0, $6 + 0, $7 + 0, $8 + 0, $9, $10 + 0, b, a
    }' "$work/wal-$r.md" >>"$work/wal-rows"
  awk -F'|' -v r="$r" -v b="$before" -v a="$after" '/^\| raw \| [0-9]/ {
      print r, $3 + 0, $4 + 0, $5 + 0, $6 + 0, b, a
    }' "$work/wal-$r.md" >>"$work/raw-rows"
done

# --- results file ----------------------------------------------------------------------------
fs="$(df --output=fstype "$bench_dir" | tail -1) on $(df --output=source "$bench_dir" | tail -1)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (with uncommitted changes)"; fi
mkdir -p perf/results
{
  echo "# Engine benchmarks: $(date -u '+%Y-%m-%d %H:%M UTC') on $host"
  echo
  echo "Generated by \`perf/engine.sh\` at commit $commit. Numbers count only as ratios against the"
  echo "fio baseline below, measured in the same run on the same filesystem (perf/README.md)."
  echo
  echo "## Machine"
  echo
  echo '```text'
  echo "nproc:      $(nproc)"
  echo "cpu:        $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory:     $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel:     $(uname -r)"
  echo "rustc:      $(rustc --version)"
  echo "fio:        $(fio --version)"
  echo "bench dir:  $bench_dir ($fs)"
  echo "load:       before: $load_before; after: $load_after (/proc/loadavg)"
  echo "io stall:   before: $io_before"
  echo "            after:  $io_after (/proc/pressure/io)"
  echo
  df -hT "$bench_dir"
  echo
  lsblk -o NAME,TYPE,SIZE,ROTA,MODEL,MOUNTPOINTS 2>/dev/null || lsblk
  echo '```'
  echo
  echo "## Commands"
  echo
  echo '```sh'
  echo "perf/engine.sh   # runs, in order:"
  echo "$fio_cmd_buffered"
  for r in $(seq 1 "$rounds"); do
    echo "$fio_cmd_direct"
    echo "$wal_cmd   # round $r"
  done
  echo "$fio_cmd_direct"
  echo "$btree_cmd"
  echo '```'
  echo
  echo "## Baseline: fio, one 4 KiB write + fdatasync at a time"
  echo
  echo "| run | fdatasyncs/s (= write IOPS) | write lat mean µs | fdatasync lat mean µs | fdatasync p50 µs | p99 µs | p99.9 µs |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  fio_row buffered
  for r in $(seq 1 "$((rounds + 1))"); do fio_row "direct-$r"; done
  echo
  echo "\`direct-k\` ran just before WAL round k (and just after round k − 1). They do what one WAL append"
  echo "does: an O_DIRECT write into a preallocated file, then fdatasync."
  echo
  sed -n '/^## WAL/p' "$work/wal-1.md"
  echo
  echo "Per round and writer count. *fio* = mean of the direct runs just before and just after the round;"
  echo "*drift* = after ÷ before (far from 1: the disk's speed changed during the round, and the ratio is"
  echo "that uncertain). Segment rolls: appends that moved on to a new 64 MiB segment, and their mean"
  echo "duration (what a roll costs the writer waiting on it)."
  echo
  echo "| round | writers | records/s | appends/s | mean batch | p50 µs | p99 µs | max µs | segment rolls: count, mean ms | other appends > 5 ms | fio fdatasyncs/s | drift | records/s ÷ fio |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk '{ f = ($11 + $12) / 2; sub(/,/, ", ", $9); d = $12 / $11
         printf "| %d | %d | %d | %d | %.1f | %d | %d | %d | %s | %d | %.0f | %.2f%s | %.2f |\n",
                $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, f, d, (d < 0.8 || d > 1.25) ? "*" : "", $3 / f }' "$work/wal-rows"
  echo
  if grep -q '^note:' "$work"/wal-*.md; then
    grep -h '^note:' "$work"/wal-*.md | sort | uniq -c | sed 's/^ *\([0-9]*\) /- (×\1) /'
    echo
  fi
  echo "Below the WAL: the bench's \`raw\` loop, one 4 KiB glommio \`DmaFile\` write + fdatasync at a time"
  echo "(fio's O_DIRECT run through the executor's io_uring path, no WAL code), in the same rounds:"
  echo
  echo "| round | raw ops/s | p50 µs | p99 µs | max µs | fio fdatasyncs/s | drift | raw ÷ fio |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk '{ f = ($6 + $7) / 2; d = $7 / $6
         printf "| %d | %d | %d | %d | %d | %.0f | %.2f%s | %.2f |\n",
                $1, $2, $3, $4, $5, f, d, (d < 0.8 || d > 1.25) ? "*" : "", $2 / f }' "$work/raw-rows"
  echo
  echo "### Summary: WAL records/s ÷ fio fdatasyncs/s (median over the steady rounds)"
  echo
  echo "With 1 writer this should be about 1 (one record per fdatasync; well below 1 = overhead per"
  echo "commit, and the raw row tells how much of it lies below the WAL, in the executor's I/O path); with"
  echo "N writers it is what group commit gains (at most N). The median is over the rounds"
  echo "whose drift stayed within 0.8–1.25 (all rounds, flagged, when none did). Against fio's buffered"
  echo "run ($(fio_iops buffered) fdatasyncs/s, etcd's disk check) multiply by"
  echo "$(awk -v u="$(fio_iops buffered)" '{ s += ($11 + $12) / 2; n++ } END { printf "%.2f", s / n / u }' "$work/wal-rows")."
  echo
  echo "| writers | median records/s | median ratio | steady rounds | ratios, all rounds (* = drift beyond ±25%) |"
  echo "|---:|---:|---:|---:|---|"
  steady='{ d = $12 / $11; ok = (d >= 0.8 && d <= 1.25) }'
  for w in $(awk '{ print $2 }' "$work/wal-rows" | sort -n -u); do
    n_ok="$(awk -v w="$w" "$steady"' $2 == w && ok { n++ } END { print n + 0 }' "$work/wal-rows")"
    n_all="$(awk -v w="$w" '$2 == w { n++ } END { print n + 0 }' "$work/wal-rows")"
    pick="ok"
    [ "$n_ok" -gt 0 ] || pick="1"
    rps="$(awk -v w="$w" "$steady"' $2 == w && '"$pick"' { print $3 }' "$work/wal-rows" | median)"
    ratio="$(awk -v w="$w" "$steady"' $2 == w && '"$pick"' { print $3 / (($11 + $12) / 2) }' "$work/wal-rows" | median)"
    all="$(awk -v w="$w" "$steady"' $2 == w { printf "%s%.2f%s", (n++ ? ", " : ""), $3 / (($11 + $12) / 2), (ok ? "" : "*") }' "$work/wal-rows")"
    flag=""
    [ "$n_ok" -gt 0 ] || flag=" **(no steady round: not trustworthy)**"
    printf '| %d | %.0f | %.2f | %d of %d%s | %s |\n' "$w" "$rps" "$ratio" "$n_ok" "$n_all" "$flag" "$all"
  done
  # The raw loop, as a row of the same table (its columns 6/7 are fio before/after).
  awk '{ print 0, 0, $2, 0, 0, 0, 0, 0, "-", 0, $6, $7 }' "$work/raw-rows" >"$work/raw-as-wal"
  n_ok="$(awk "$steady"' ok { n++ } END { print n + 0 }' "$work/raw-as-wal")"
  pick="ok"
  [ "$n_ok" -gt 0 ] || pick="1"
  rps="$(awk "$steady $pick"' { print $3 }' "$work/raw-as-wal" | median)"
  ratio="$(awk "$steady $pick"' { print $3 / (($11 + $12) / 2) }' "$work/raw-as-wal" | median)"
  all="$(awk "$steady"' { printf "%s%.2f%s", (n++ ? ", " : ""), $3 / (($11 + $12) / 2), (ok ? "" : "*") }' "$work/raw-as-wal")"
  printf '| raw (no WAL) | %.0f | %.2f | %d of %d | %s |\n' "$rps" "$ratio" "$n_ok" "$rounds" "$all"
  echo
  cat "$work/btree.md"
} >"$out"
echo "wrote $out" >&2
