#!/usr/bin/env bash
# bench/incremental.sh: how long an incremental backup of UNCHANGED data takes,
# done three ways, each against its own local restic repository:
#
#   subvault  bin/subvault run backup data --config ... (read-only snapshot,
#             bind-mounted over the subvolume in a private mount namespace,
#             restic backs up the original path and finds its parent)
#   seed003   the method of the usual script (what subvault replaces):
#             btrfs subvolume snapshot -r to a
#             timestamped path, restic backup <that path>, delete the snapshot
#             (a new path each time: restic finds no parent, rereads all)
#   plain     restic backup <subvolume path>, live, no snapshot (no
#             consistency; the speed baseline)
#
# For each size: a fresh loop-device btrfs (direct I/O on the backing file, so
# "cold" means the disk), FILES files of incompressible random data with
# sizes spread uniformly over 0.5x..1.5x the mean, one untimed initial full
# backup per method, then RUNS timed runs per method with a warm page cache
# and RUNS with a cold one (sync; echo 3 > /proc/sys/vm/drop_caches),
# interleaved and rotated so no method always follows the same one.
#
# Usage (root): bench/incremental.sh [--sizes 2,8] [--runs 3] [--restic PATH]
#                                    [--files 20000] [--out bench/results]
# Environment: BENCH_TMPDIR (default /var/tmp) holds the image and repositories;
#              BENCH_LOGS=DIR keeps every run's output there.
# Writes bench/results/incremental-<date>-restic<version>.{md,csv}.
set -euo pipefail
cd "$(dirname "$0")/.."

cmdline="$0${*:+ $*}"
sizes=2,8
runs=3
files=20000
restic_bin=$(command -v restic || true)
out=bench/results

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) sizes=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --restic) restic_bin=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "incremental.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "incremental.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (loop device, btrfs, snapshots, drop_caches); run: sudo $0"
[ -n "$restic_bin" ] && [ -x "$restic_bin" ] || die "no restic binary (give --restic PATH)"
restic_bin=$(readlink -f "$restic_bin")
for c in btrfs mkfs.btrfs losetup python3 unshare; do
  command -v "$c" >/dev/null || die "needs $c"
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
sync; echo 3 > /proc/sys/vm/drop_caches || die "cannot drop the page cache (/proc/sys/vm/drop_caches)"

if [ ! -x bin/subvault ]; then
  echo "== bin/subvault missing: make build"
  make build
fi
subvault=$PWD/bin/subvault

restic_version=$("$restic_bin" version | awk '{print $2}')
stamp=$(date -u +%Y-%m-%d)
mkdir -p "$out"
base=$out/incremental-$stamp-restic$restic_version
csv=$base.csv
md=$base.md

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/subvault-bench.XXXXXX")
mnt="" loop=""
teardown_fs() {
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then
    umount "$mnt" 2>/dev/null || { sleep 1; umount "$mnt" 2>/dev/null; } || umount -l "$mnt"
  fi
  if [ -n "$loop" ]; then losetup -d "$loop"; fi
  mnt="" loop=""
}
cleanup() {
  set +e
  trap - EXIT INT TERM
  teardown_fs
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "incremental.sh: interrupted" >&2; exit 130' INT
trap 'echo "incremental.sh: terminated" >&2; exit 143' TERM

t0_all=$(date +%s)
now() { date +%s.%N; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

# machine, for the header
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
wdev=$(df --output=source "$work" | tail -1)
wfs=$(df --output=fstype "$work" | tail -1)
wdisk=$(lsblk -nd -o PKNAME "$wdev" 2>/dev/null | head -1)
wdisk=/dev/${wdisk:-${wdev#/dev/}}
wdisk="$wdisk: $(lsblk -nd -o SIZE "$wdisk" 2>/dev/null | tr -d ' '), model '$(lsblk -nd -o MODEL "$wdisk" 2>/dev/null | sed 's/ *$//')', rotational=$(lsblk -nd -o ROTA "$wdisk" 2>/dev/null | tr -d ' ')"
machine="nproc $(nproc) ($cpu), $mem RAM, kernel $(uname -r), restic $restic_version ($restic_bin), subvault $(git rev-parse --short HEAD 2>/dev/null || echo '?'), disk: $wfs on $wdev ($wdisk) (loop-device btrfs image with direct I/O + repositories both there)"

# snapshot_window_s: from "snapshot made" to "snapshot deleted" as the method
# itself reports it (subvault: its log lines; seed003: after each btrfs
# command); wall minus that is what the method spends outside the window.
echo "size_gb,files,cache,method,run,seconds,files_new,files_changed,files_unmodified,dirs_new,dirs_changed,dirs_unmodified,restic_duration_s,snapshot_window_s" > "$csv"

# summary fields of one run's log: restic --json (plain, seed003) or subvault's text
summary_of() { # method logfile -> "fn,fc,fu,dn,dc,du,dur,window"
  local m=$1 f=$2
  if [ "$m" = subvault ]; then
    python3 - "$f" <<'PY'
import re, sys
from datetime import datetime, timezone
t = open(sys.argv[1], errors="replace").read()
def at(msg):
    m = re.search(r'time=(\S+) level=\w+ msg="%s"' % msg, t)
    if not m: return None
    x = m.group(1).rstrip("Z")
    x = x[:26] if "." in x else x
    return datetime.fromisoformat(x).replace(tzinfo=timezone.utc).timestamp()
c, d = at("snapshot created"), at("snapshot deleted")
win = "%.3f" % (d - c) if c is not None and d is not None else ""
f = re.search(r"files:\s*(\d+) new, (\d+) changed, (\d+) unmodified", t)
d = re.search(r"dirs:\s*(\d+) new, (\d+) changed, (\d+) unmodified", t)
dur = re.search(r"\bduration=(\S+)", t)  # a Go duration: 300.1ms, 2.4s, 1m3.77s
unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
v = ""
if dur:
    parts = re.findall(r"([0-9.]+)(h|ms|us|µs|ns|m|s)", dur.group(1))
    if parts: v = "%.3f" % sum(float(x) * unit[u] for x, u in parts)
print(",".join([*(f.groups() if f else ("",) * 3), *(d.groups() if d else ("",) * 3), v, win]))
PY
  else
    python3 - "$f" <<'PY'
import json, sys
s = {}
mark = {}
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("bench-mark "):
        _, k, v = line.split()
        mark[k] = float(v)
    if '"summary"' in line:
        try: s = json.loads(line)
        except ValueError: pass
k = ["files_new", "files_changed", "files_unmodified", "dirs_new", "dirs_changed", "dirs_unmodified"]
win = "%.3f" % (mark["deleted"] - mark["created"]) if len(mark) == 2 else ""
print(",".join([*(str(s.get(x, "")) for x in k), "%.3f" % s["total_duration"] if "total_duration" in s else "", win]))
PY
  fi
}

# one backup by one method; its output goes to $2
do_backup() { # method logfile
  local m=$1 logf=$2
  case $m in
    subvault)
      "$subvault" run backup data --config "$cfg" >"$logf" 2>&1 ;;
    seed003)
      # the seed 003 script, its backup steps as written (forget --prune and
      # check, which it runs afterwards, are left out: they are not the backup)
      (
        export RESTIC_PASSWORD
        RESTIC_PASSWORD=$(cat "$work/pass")
        export RESTIC_CACHE_DIR=$work/cache-seed003
        BTRFS_SUBVOLUME=$sub SNAPSHOT_DIR=/.snapshots RESTIC_REPO=$work/repo-seed003
        TIMESTAMP=$(date +%Y-%m-%d-%H%M%S)
        SNAPSHOT_PATH="${BTRFS_SUBVOLUME}${SNAPSHOT_DIR}/restic-backup-${TIMESTAMP}"
        btrfs subvolume snapshot -r "${BTRFS_SUBVOLUME}" "${SNAPSHOT_PATH}"
        echo "bench-mark created $(date +%s.%N)"
        "$restic_bin" backup "${SNAPSHOT_PATH}" --repo "${RESTIC_REPO}" --verbose --tag btrfs-snapshot --json \
          || { btrfs subvolume delete "${SNAPSHOT_PATH}"; exit 1; }
        btrfs subvolume delete "${SNAPSHOT_PATH}"
        echo "bench-mark deleted $(date +%s.%N)"
      ) >"$logf" 2>&1 ;;
    plain)
      RESTIC_PASSWORD_FILE=$work/pass RESTIC_CACHE_DIR=$work/cache-plain \
        "$restic_bin" backup "$sub" --repo "$work/repo-plain" --json >"$logf" 2>&1 ;;
  esac
}

# flush writes and commit, then wait for deleted snapshots to be cleaned
# (without the commit, the cleaner waits for the 30 s commit interval)
settle() { sync; btrfs filesystem sync "$mnt" >/dev/null; btrfs subvolume sync "$mnt" >/dev/null 2>&1 || true; sync; }

warm_up() { # method: the data, the method's repository metadata and cache in the page cache
  local m=$1
  find "$sub" -xdev -type f -print0 | xargs -0 -r -P2 -n 500 cat >/dev/null
  find "$work/repo-$m" -path '*/data' -prune -o -type f -print0 | xargs -0 -r cat >/dev/null
  find "$work/cache-$m" -type f -print0 2>/dev/null | xargs -0 -r cat >/dev/null
}

timed() { # size cache method run
  local size=$1 cache=$2 m=$3 r=$4 logf=$work/log-$1-$2-$3-$4 t1 t2 secs sum
  settle
  if [ "$cache" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches
  elif [ "$cache" = warm ]; then warm_up "$m"; fi
  t1=$(now)
  if ! do_backup "$m" "$logf"; then
    cat "$logf" >&2
    die "$m backup failed (size $size, $cache, run $r)"
  fi
  t2=$(now)
  secs=$(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.3f", b - a}')
  sum=$(summary_of "$m" "$logf")
  if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS"; cp "$logf" "$BENCH_LOGS/"; fi
  echo "$size,$files,$cache,$m,$r,$secs,$sum" >> "$csv"
  log "$(printf '%4s GB %-5s %-8s run %s: %8.2f s  (new,changed,unmod files / dirs, restic s: %s)' "$size" "$cache" "$m" "$r" "$secs" "$sum")"
}

methods=(subvault seed003 plain)
IFS=, read -ra size_list <<<"$sizes"
for size in "${size_list[@]}"; do
  log "== $size GB, $files files: a fresh loop-device btrfs"
  fsdir=$work/fs-$size
  mkdir -p "$fsdir/mnt"
  img_mb=$(awk -v s="$size" 'BEGIN {printf "%d", s * 1024 * 1.25 + 1024}')
  truncate -s "${img_mb}M" "$fsdir/fs.img"
  mkfs.btrfs -q "$fsdir/fs.img"
  loop=$(losetup --direct-io=on --find --show "$fsdir/fs.img" 2>/dev/null || losetup --find --show "$fsdir/fs.img")
  mnt=$fsdir/mnt
  mount "$loop" "$mnt"
  sub=$mnt/data
  btrfs subvolume create "$sub" >/dev/null
  mkdir -p "$sub/.snapshots"   # the seed script's SNAPSHOT_DIR, on the same filesystem

  log "writing $size GB of random data in $files files"
  python3 - "$sub" "$files" "$size" <<'PY'
import os, random, sys
root, n, gb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
total = int(gb * 1e9)
rng = random.Random(3)
w = [rng.uniform(0.5, 1.5) for _ in range(n)]
scale = total / sum(w)
sizes = [int(x * scale) for x in w]
sizes[-1] += total - sum(sizes)
per_dir = 200
for i, sz in enumerate(sizes):
    d = os.path.join(root, "d%03d" % (i // per_dir))
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        left = sz
        while left > 0:
            k = min(left, 1 << 20)
            f.write(os.urandom(k))
            left -= k
PY
  settle
  log "data: $(du -sh --apparent-size "$sub" | cut -f1), $(find "$sub" -type f | wc -l) files"

  rm -rf "$work"/repo-* "$work"/cache-* "$work/state"
  [ -f "$work/pass" ] || { head -c 24 /dev/urandom | base64 > "$work/pass"; chmod 600 "$work/pass"; }
  cfg=$work/config.yaml
  cat > "$cfg" <<YAML
repositories:
  bench:
    url: $work/repo-subvault
    password_file: $work/pass
    init: true
    cache_dir: $work/cache-subvault
plans:
  data:
    subvolumes: [$sub]
    repository: bench
settings:
  state_dir: $work/state
  cache_dir: $work/cache
  restic: $restic_bin
YAML
  for m in seed003 plain; do
    RESTIC_PASSWORD_FILE=$work/pass "$restic_bin" init --repo "$work/repo-$m" >/dev/null
  done

  for m in "${methods[@]}"; do
    log "initial full backup, $m (untimed in the table; recorded as cache=prime)"
    timed "$size" prime "$m" 0
  done

  for ((r = 1; r <= runs; r++)); do
    if ((r % 2)); then modes=(warm cold); else modes=(cold warm); fi
    for cache in "${modes[@]}"; do
      for ((i = 0; i < ${#methods[@]}; i++)); do
        m=${methods[$(((i + r - 1) % ${#methods[@]}))]}
        timed "$size" "$cache" "$m" "$r"
      done
    done
  done
  teardown_fs
  rm -rf "$fsdir" "$work"/repo-* "$work"/cache-*
done

elapsed=$(( $(date +%s) - t0_all ))
python3 - "$csv" "$md" "$machine" "$runs" "$files" "$elapsed" "$cmdline" <<'PY'
import csv, statistics, sys
path, md, machine, runs, files, elapsed, cmd = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
med = {}
extra = {}
for r in rows:
    if r["cache"] == "prime":
        continue
    k = (r["size_gb"], r["cache"], r["method"])
    med.setdefault(k, []).append(float(r["seconds"]))
    extra.setdefault(k, []).append(r)
def num(s):
    try: return float(s)
    except ValueError: return None
sizes = sorted({k[0] for k in med}, key=float)
lines = []
lines.append("| size | cache | method | median s | runs (s) | x plain | seed003 / subvault | files unmodified | dirs changed | restic s (median) | snapshot window s (median) |")
lines.append("| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for s in sizes:
    for c in ("warm", "cold"):
        p = statistics.median(med[(s, c, "plain")])
        sv = statistics.median(med[(s, c, "subvault")])
        sd = statistics.median(med[(s, c, "seed003")])
        for m in ("subvault", "seed003", "plain"):
            v = med[(s, c, m)]
            mv = statistics.median(v)
            ex = extra[(s, c, m)]
            fu = sorted({e["files_unmodified"] for e in ex})
            dc = sorted({e["dirs_changed"] for e in ex})
            rd = [num(e["restic_duration_s"]) for e in ex if num(e["restic_duration_s"]) is not None]
            wn = [num(e.get("snapshot_window_s") or "") for e in ex if num(e.get("snapshot_window_s") or "") is not None]
            lines.append("| %s GB | %s | %s | %.2f | %s | %.2f | %s | %s | %s | %s | %s |" % (
                s, c, m, mv, " ".join("%.2f" % x for x in v), mv / p,
                ("%.2f" % (sd / sv)) if m == "subvault" else "",
                "/".join(fu), "/".join(dc), ("%.2f" % statistics.median(rd)) if rd else "",
                ("%.2f" % statistics.median(wn)) if wn else ""))
prime = ["| %s GB | %s | %s |" % (r["size_gb"], r["method"], r["seconds"]) for r in rows if r["cache"] == "prime"]
table = "\n".join(lines)
print()
print(table)
print()
with open(md, "w") as f:
    f.write("# Incremental backup of unchanged data: subvault, seed 003 script, plain restic\n\n")
    f.write("Machine: %s.\n\n" % machine)
    f.write("Command: `%s`; %s files per size, random incompressible data; %s timed runs per cell, "
            "median; whole run %d min %02d s.\n\n" % (cmd.strip(), files, runs, int(elapsed) // 60, int(elapsed) % 60))
    f.write("Wall time of the whole method (subvault: the `subvault run backup` process; seed003: snapshot + "
            "`restic backup` + delete; plain: `restic backup`). `x plain` = median / plain's median, same size "
            "and cache; `seed003 / subvault` = how many times longer the seed script takes. `restic s` is "
            "restic's own `total_duration` (subvault: from its log). `snapshot window` is the time from the "
            "snapshot being made to its delete returning, as the method reports it (subvault: its log lines; seed003: "
            "after each btrfs command): wall minus window is what the method spends outside it (process start, "
            "config, `restic version`, the snapshot ioctl itself). GB = 10^9 bytes. Cold: `sync; echo 3 > "
            "/proc/sys/vm/drop_caches` before the run; warm: the data and the method's repository index and cache "
            "read just before.\n\n")
    f.write(table + "\n\n")
    f.write("Initial full backups (untimed in the table):\n\n| size | method | s |\n| ---: | --- | ---: |\n")
    f.write("\n".join(prime) + "\n")
print("wrote", md, "and", path)
PY
log "done in $((elapsed / 60)) min $((elapsed % 60)) s"
