#!/usr/bin/env bash
# What an idle subvault daemon costs: resident memory and wakeups per minute,
# with 20 plans scheduled (none due during the measurement).
# Usage: bench/idle.sh [--seconds N]   (root not needed; default 120 s)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=120
[ "${1:-}" = --seconds ] && seconds=$2

make build >/dev/null
work=$(mktemp -d /tmp/subvault-idle.XXXXXX)
bus_pid=""; daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path=$work/bus.sock</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/></policy></busconfig>
XML
dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile 2>/dev/null &
bus_pid=$!
for _ in $(seq 100); do [ -S "$work/bus.sock" ] && break; sleep 0.05; done

# 20 plans whose schedules are all far from now (the same minute yesterday).
minute=$(date -d '-2 min' +%M); hour=$(date -d '-2 min' +%H)
{
  echo "repositories:"
  echo "  r: {url: $work/repo, password_file: $work/pass}"
  echo "plans:"
  for i in $(seq 1 20); do
    echo "  plan$i: {subvolumes: [/srv/plan$i], repository: r, schedule: \"$minute $hour * * *\", prune_schedule: \"\", check_schedule: \"\"}"
  done
  echo "settings: {state_dir: $work/state, cache_dir: $work/cache}"
} > "$work/config.yaml"
echo x > "$work/pass"

bin/subvault daemon --config "$work/config.yaml" --bus "unix:path=$work/bus.sock" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do grep -q 'subvault started' "$work/daemon.log" 2>/dev/null && break; sleep 0.1; done
sleep 5   # start-up settles
if ! kill -0 "$daemon_pid" 2>/dev/null || ! grep -q 'subvault started' "$work/daemon.log"; then echo "the daemon did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; fi

switches() {  # context switches of every thread: each is a wakeup or a preemption
  local total=0 v n
  for f in /proc/$daemon_pid/task/*/status; do
    v=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$f"); n=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$f")
    total=$((total + v + n))
  done
  echo "$total"
}
before=$(switches)
sleep "$seconds"
after=$(switches)
syscalls="(install strace to count)"
if command -v strace >/dev/null; then
  # A second window, under strace (which itself adds context switches):
  # every system call the daemon makes while idle, all threads.
  timeout "$seconds" strace -f -c -p "$daemon_pid" -o "$work/strace" >/dev/null 2>&1 || true
  syscalls=$(awk '$NF=="total" {print $(NF-2)}' "$work/strace")
  [ -n "$syscalls" ] || syscalls=0
fi
rss_kib=$(awk '/^VmRSS/ {print $2}' /proc/$daemon_pid/status)
threads=$(ls /proc/$daemon_pid/task | wc -l)
per_min=$(awk -v d=$((after - before)) -v s="$seconds" 'BEGIN { printf "%.1f", d * 60 / s }')

printf '| plans | seconds per window | RSS | threads | context switches per minute | system calls in a window (strace) |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
printf '| 20 | %s | %.1f MiB | %s | %s | %s |\n' "$seconds" "$(awk -v k="$rss_kib" 'BEGIN{print k/1024}')" "$threads" "$per_min" "$syscalls"
