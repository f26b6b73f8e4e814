#!/bin/bash
# A long run of fuzz targets, keeping corpus, crashes and the log per target; prints one
# row of the table in tests/fuzz/README.md per target: wall seconds, CPU seconds (user + system, children
# included), executions, executions per second, coverage, features, corpus, peak RSS, findings.
#
#   tests/fuzz/long_run.sh [-s SECONDS | -c CPU_SECONDS] [-d DIR] [-b BUILD] TARGET...   (TARGET: zip, ...)
#
# -s stops each target after SECONDS of wall time (libFuzzer's -max_total_time); -c instead stops it (SIGINT,
# so libFuzzer still prints its final statistics and exits 72) once its CPU time, libhdf5 children included,
# reaches CPU_SECONDS, however busy the machine is: -c 3600 is the CPU-hour per target.
#
# DIR (default fuzz-runs) keeps DIR/<target>/corpus between runs, so a second run continues the first;
# DIR/<target>/crash-*, leak-*, timeout-*, oom-* are findings (slow-unit-* are not: a busy machine makes
# them). The targets run one after the other; start the script once per target for parallel runs: N runs
# of S seconds on C cores give each about S*C/N CPU seconds.
set -euo pipefail
seconds=3600
cpu_limit=
dir=fuzz-runs
build=build/fuzz
while getopts "s:c:d:b:" opt; do
  case $opt in
    s) seconds=$OPTARG ;;
    c) cpu_limit=$OPTARG seconds=0 ;; # 0: no wall-time limit
    d) dir=$OPTARG ;;
    b) build=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-s SECONDS | -c CPU_SECONDS] [-d DIR] [-b BUILD] TARGET..." >&2; exit 2; }

# CPU seconds of a process and of the children it has waited for (/proc/PID/stat: utime, stime, cutime,
# cstime, in clock ticks, after the command name in parentheses).
cpu_seconds() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{ print int(($12 + $13 + $14 + $15) / hz) }' <<<"${stat##*) }"
}

for t in "$@"; do
  bin=$build/tests/fuzz/fuzz_$t
  seeds=$build/tests/fuzz/seeds/$t
  [ -x "$bin" ] || { echo "$bin: not built (cmake --preset fuzz && cmake --build $build)" >&2; exit 2; }
  out=$dir/$t
  mkdir -p "$out/corpus"
  timeout=20
  case $t in keras | checkpoint) timeout=60 ;; esac # an input may start several libhdf5 children
  # the dictionaries as tests/fuzz/CMakeLists.txt maps them
  dict=
  case $t in
    unpickler | torchzip | legacy | torchscript | checkpoint | dcp | zip) dict=torch ;;
    safetensors | shardindex) dict=safetensors ;;
    gguf) dict=gguf ;;
    npy | npz) dict=npy ;;
  esac
  dict_option=()
  [ -n "$dict" ] && dict_option=(-dict="$(dirname "$0")/dict/$dict.dict")
  run=$out/run-$(date +%Y%m%d-%H%M%S)-$$
  log=$run.log
  start=$(date +%s)
  set +e
  /usr/bin/time -o "$run.time" -f "%U %S" "$bin" -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=$timeout "${dict_option[@]}" -print_final_stats=1 \
    -artifact_prefix="$out/" "$out/corpus" "$seeds" >"$log" 2>&1 &
  timer=$!
  if [ -n "$cpu_limit" ]; then
    while kill -0 "$timer" 2>/dev/null; do
      sleep 5
      fuzzer=$(pgrep -P "$timer" | head -1)
      [ -n "$fuzzer" ] && [ "$(cpu_seconds "$fuzzer")" -ge "$cpu_limit" ] && kill -INT "$fuzzer"
    done
  fi
  wait "$timer"
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  cpu=$(tail -1 "$run.time" | awk '{ printf "%d", $1 + $2 }')
  # libFuzzer's last status line ("#N DONE cov: C ft: F corp: K/S ...") and its final statistics
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9A-Za-z]+).*/\1/p' <<<"$last")
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log" | tail -1)
  rss=$(sed -nE 's/^stat::peak_rss_mb: *([0-9]+)/\1/p' "$log" | tail -1)
  findings=$(find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' \) | wc -l)
  echo "| \`fuzz_$t\` | $took | $cpu | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | ${rss:-?}Mb | $findings (exit $rc) |"
done
