#!/usr/bin/env bash
# Records what real restic binaries print when a remote repository refuses
# or loses them, into testdata/<version>/<case>.{stdout,stderr,rc}: servers on
# loopback started here (a second sshd, key-only, in its own mount namespace
# for /run/sshd; rclone serve restic with basic auth; SeaweedFS S3 when
# WEED=/path/to/weed is set). The classification tests read these files.
# Run as root: restic/testdata/record-remote.sh /usr/bin/restic "$(.ci/restic-versions)"
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d /tmp/subvault-record-remote-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$w"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# SeaweedFS listens on PORT+10000 for gRPC as well: both must be free.
weedport() { python3 -c '
import random, socket
while True:
    p = random.randint(20000, 40000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'; }
echo "subvault-record-password" >"$w/pw"
mkdir -p "$w/data" "$w/small" "$w/srv" "$w/sftp" "$w/priv"
for i in $(seq 1 8); do head -c 16M /dev/urandom >"$w/data/f$i"; done
echo hi >"$w/small/x"

# sshd: key-only, root's login allowed from a key in $w only.
for k in hostkey hostkey2 key wrongkey; do ssh-keygen -q -t ed25519 -N '' -C "$k" -f "$w/$k"; done
cp "$w/key.pub" "$w/authorized_keys"
sshport=$(freeport)
cat >"$w/sshd_config" <<EOF
Port $sshport
ListenAddress 127.0.0.1
HostKey $w/hostkey
PidFile none
AuthorizedKeysFile $w/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
EOF
unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"' sh "$w/sshd_config" 2>"$w/sshd.log" &
sshd=$!; pids+=("$sshd")
echo "[127.0.0.1]:$sshport $(cut -d' ' -f1,2 "$w/hostkey.pub")" >"$w/known_hosts"
echo "[127.0.0.1]:$sshport $(cut -d' ' -f1,2 "$w/hostkey2.pub")" >"$w/known_hosts_changed"
: >"$w/known_hosts_empty"
sshcmd() { echo "ssh -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=30 -p $sshport -i $w/$1 -o UserKnownHostsFile=$w/$2 -l root 127.0.0.1 -s sftp"; }

restport=$(freeport)
startrest() { rclone serve restic --addr "127.0.0.1:$restport" --user u --pass right "$w/srv" 2>"$w/rclone.log" & restpid=$!; pids+=("$restpid"); sleep 1.5; }
startrest
# --private-repos: user u may use /u/ only, and gets 403 elsewhere.
privport=$(freeport)
rclone serve restic --addr "127.0.0.1:$privport" --user u --pass right --private-repos "$w/priv" 2>"$w/rclone-priv.log" & pids+=("$!")
sleep 1.5

s3port=""
if [ -n "${WEED:-}" ]; then
  s3port=$(weedport)
  cat >"$w/s3.json" <<EOF
{"identities":[{"name":"rec","credentials":[{"accessKey":"RECACCESSKEY","secretKey":"rec-secret-key-1234"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
EOF
  mkdir -p "$w/weed"
  startweed() { "$WEED" server -dir="$w/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$(weedport)" -volume.port="$(weedport)" -filer.port="$(weedport)" -s3 -s3.port="$s3port" -s3.config="$w/s3.json" -volume.max=20 >"$w/weed.log" 2>&1 & weed=$!; pids+=("$weed")
    for _ in $(seq 1 240); do curl -s -o /dev/null "http://127.0.0.1:$s3port/" && break; sleep 0.5; done; sleep 2; }
  startweed
fi

for bin in "$@"; do
  v=$("$bin" version | sed -n 's/^restic \([0-9.]*\).*/\1/p')
  out=$here/$v; mkdir -p "$out"
  export RESTIC_PASSWORD_FILE=$w/pw RESTIC_CACHE_DIR=$w/cache-$v HOME=$w
  rec() { local name=$1; shift; "$@" >"$out/$name.stdout" 2>"$out/$name.stderr" </dev/null; echo $? >"$out/$name.rc"; }
  rest="rest:http://u:right@127.0.0.1:$restport/r-$v"
  badrest="rest:http://u:wrong-pass-9@127.0.0.1:$restport"
  RESTIC_REPOSITORY=$rest "$bin" init >/dev/null 2>&1
  RESTIC_REPOSITORY=$badrest/r-$v rec rest-unauthorized "$bin" snapshots --json
  RESTIC_REPOSITORY=$badrest/fresh-$v rec rest-init-unauthorized "$bin" init
  RESTIC_REPOSITORY=rest:http://u:right@127.0.0.1:$privport/other-$v/ rec rest-forbidden timeout -s INT 20 "$bin" snapshots --json
  RESTIC_REPOSITORY=rest:http://u:right@127.0.0.1:$privport/other-$v/ rec rest-init-forbidden timeout -s INT 20 "$bin" init
  # 0.17+ retries a refused connection for 15 minutes: interrupt it.
  RESTIC_REPOSITORY=rest:http://u:right@127.0.0.1:1/r rec rest-wrong-port timeout -s INT 6 "$bin" backup --json "$w/small"

  sftp="sftp:root@127.0.0.1:$w/sftp/r-$v"
  RESTIC_REPOSITORY=$sftp "$bin" -o sftp.command="$(sshcmd key known_hosts)" init >/dev/null 2>&1
  # restic passes on ssh's stderr only when it copied it before exiting:
  # record until the line is there (the rare run without it is the case
  # subvault asks ssh itself).
  for try in 1 2 3 4 5; do
    RESTIC_REPOSITORY=$sftp rec sftp-publickey "$bin" -o sftp.command="$(sshcmd wrongkey known_hosts)" snapshots --json
    grep -q "Permission denied" "$out/sftp-publickey.stderr" && break
  done
  for try in 1 2 3 4 5; do
    RESTIC_REPOSITORY=$sftp rec sftp-hostkey-unknown "$bin" -o sftp.command="$(sshcmd key known_hosts_empty)" snapshots --json
    grep -q "host key is known" "$out/sftp-hostkey-unknown.stderr" && break
  done
  for try in 1 2 3 4 5; do
    RESTIC_REPOSITORY=$sftp rec sftp-hostkey-changed "$bin" -o sftp.command="$(sshcmd key known_hosts_changed)" snapshots --json
    grep -q "has changed" "$out/sftp-hostkey-changed.stderr" && break
  done
  # The server's session killed during a backup.
  RESTIC_REPOSITORY=$sftp "$bin" -o sftp.command="$(sshcmd key known_hosts)" backup --json "$w/data" >"$out/sftp-connection-lost.stdout" 2>"$out/sftp-connection-lost.stderr" </dev/null &
  b=$!; sleep 2.5
  for c in $(pgrep -P "$sshd"); do kill -9 "$c"; done
  wait $b; echo $? >"$out/sftp-connection-lost.rc"

  # The REST server killed during a backup; SIGINT 8 s later, as a stall
  # timeout would, and SIGKILL 5 s after that.
  RESTIC_REPOSITORY=$rest-lost "$bin" init >/dev/null 2>&1
  RESTIC_REPOSITORY=$rest-lost timeout -k 5 -s INT 10 "$bin" backup --limit-upload 20480 --json "$w/data" >"$out/rest-connection-lost.stdout" 2>"$out/rest-connection-lost.stderr" </dev/null &
  b=$!; sleep 2
  kill -9 "$restpid"; wait "$restpid" 2>/dev/null
  wait $b; echo $? >"$out/rest-connection-lost.rc"
  startrest

  if [ -n "$s3port" ]; then
    s3="s3:http://127.0.0.1:$s3port/rec-$v"
    export AWS_ACCESS_KEY_ID=RECACCESSKEY AWS_SECRET_ACCESS_KEY=rec-secret-key-1234
    RESTIC_REPOSITORY=$s3 "$bin" init >/dev/null 2>&1
    AWS_ACCESS_KEY_ID=NOSUCHKEY RESTIC_REPOSITORY=$s3 rec s3-wrong-key-id timeout -s INT 20 "$bin" snapshots --json
    AWS_SECRET_ACCESS_KEY=wrong-secret RESTIC_REPOSITORY=$s3 rec s3-wrong-secret timeout -s INT 20 "$bin" snapshots --json
    AWS_SECRET_ACCESS_KEY=wrong-secret RESTIC_REPOSITORY=s3:http://127.0.0.1:$s3port/fresh-$v rec s3-init-wrong-secret timeout -s INT 20 "$bin" init
    RESTIC_REPOSITORY=s3:http://127.0.0.1:1/rec-$v rec s3-wrong-port timeout -s INT 8 "$bin" snapshots --json
    RESTIC_REPOSITORY=$s3 timeout -k 5 -s INT 12 "$bin" backup --limit-upload 20480 --json "$w/data" >"$out/s3-connection-lost.stdout" 2>"$out/s3-connection-lost.stderr" </dev/null &
    b=$!; sleep 2.5
    kill -9 "$weed"; wait "$weed" 2>/dev/null
    wait $b; echo $? >"$out/s3-connection-lost.rc"
    startweed
    unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  fi
  # Keep only the first and last few lines of the long ones, and no
  # temporary directory names.
  for f in "$out"/*-connection-lost.std* "$out"/*-unauthorized.std* "$out"/*-wrong-*.std* "$out"/sftp-*.std* "$out"/s3-*.std*; do
    [ -f "$f" ] || continue
    case $f in *-connection-lost.*) ;; *) sed -i "s|$w|/tmp/subvault-record-remote|g" "$f"; continue ;; esac
    if [ "$(wc -l <"$f")" -gt 12 ]; then { head -n 6 "$f"; tail -n 6 "$f"; } >"$f.tmp" && mv "$f.tmp" "$f"; fi
    sed -i "s|$w|/tmp/subvault-record-remote|g" "$f"
  done
done
