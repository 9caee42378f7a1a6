#!/usr/bin/env bash
# Records what real restic binaries print for the cases restic/ parses, into
# testdata/<version>/<case>.{stdout,stderr,rc}. The parsing and exit-mapping
# tests read these files. Run as root (the partial case reads a sysfs file
# that refuses even root): restic/testdata/record.sh /usr/bin/restic "$(.ci/restic-versions)"
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d /tmp/subvault-record-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$w"' EXIT
echo "subvault-record-password" >"$w/pw"; echo wrong >"$w/badpw"
mkdir -p "$w/data/sub"
for i in $(seq 1 20); do head -c 1000 /dev/urandom >"$w/data/f$i"; done
echo hi >"$w/data/sub/x"
unreadable=$(find /sys/bus -maxdepth 2 -type f -perm 0200 | head -n 1)

for bin in "$@"; do
  v=$("$bin" version | sed -n 's/^restic \([0-9.]*\).*/\1/p')
  out=$here/$v; mkdir -p "$out"
  export RESTIC_PASSWORD_FILE=$w/pw RESTIC_REPOSITORY=$w/repo-$v RESTIC_CACHE_DIR=$w/cache HOME=$w
  rec() { local name=$1; shift; "$@" >"$out/$name.stdout" 2>"$out/$name.stderr"; echo $? >"$out/$name.rc"; }
  "$bin" init >/dev/null 2>&1
  rec backup-first "$bin" backup --json --host rec "$w/data"
  rec backup-second "$bin" backup --json --host rec "$w/data"
  rec backup-partial "$bin" backup --json --host rec "$w/data" "$unreadable"
  rec snapshots "$bin" snapshots --json
  rec forget-prune "$bin" forget --json --keep-last 1 --group-by host,paths --prune
  RESTIC_PASSWORD_FILE=$w/badpw rec wrong-password "$bin" snapshots --json
  RESTIC_REPOSITORY=$w/nope rec no-repository "$bin" backup --json "$w/data"
  RESTIC_REPOSITORY=sftp:nobody@127.0.0.1:/nope rec unreachable-sftp "$bin" snapshots --json
  # 0.17+ retries a refused connection for 15 minutes: interrupt it.
  RESTIC_REPOSITORY=rest:http://user:hunter2@127.0.0.1:1/ rec unreachable-rest timeout -s INT 4 "$bin" snapshots --json
  # An exclusive lock held by a live restic (key passwd waits on stdin).
  rm -f "$w/fifo"; mkfifo "$w/fifo"
  "$bin" key passwd <"$w/fifo" >/dev/null 2>&1 &
  holder=$!
  sleep 600 >"$w/fifo" &
  writer=$!
  sleep 3
  rec locked "$bin" backup --json "$w/data"
  kill "$holder" "$writer" 2>/dev/null; wait "$holder" "$writer" 2>/dev/null
  "$bin" unlock >/dev/null 2>&1
  # An interrupted backup: SIGINT while it reads a sparse 20 GiB file.
  truncate -s 20G "$w/big"
  "$bin" backup --json "$w/big" >"$out/interrupted.stdout" 2>"$out/interrupted.stderr" &
  pid=$!; sleep 4; kill -INT $pid; wait $pid; echo $? >"$out/interrupted.rc"
  rm -f "$w/big"
  "$bin" list locks --no-lock >"$out/interrupted.locks-after" 2>&1
  # keep only the first and last few status lines of the long ones
  for f in "$out"/*.stdout; do
    if [ "$(wc -l <"$f")" -gt 12 ]; then { head -n 6 "$f"; tail -n 6 "$f"; } >"$f.tmp" && mv "$f.tmp" "$f"; fi
  done
done
