#!/usr/bin/env bash
# Records what real restic binaries print for `restic diff` and `restic ls
# --json`, into testdata/<version>/{diff,diff-metadata,diff-json,diff-same,
# diff-missing,ls}.{stdout,stderr,rc}. The diff and ls parser tests read
# these files. Usage:
#   restic/testdata/record-diff.sh /usr/bin/restic "$(.ci/restic-versions)"
#
# The tree is backed up as the relative path "data" so that the archives'
# paths are /data/... whatever the temporary directory is called. Between
# the two archives: one file added (sub/added), one removed (gone), one
# modified (mod), one file made a symlink (typ), one chmod (meta), a file
# whose name is not UTF-8 modified (bad\xffname), a name with a newline and
# one with two spaces added, a directory added with a file in it (newdir),
# a directory removed with a file in it (olddir).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d /tmp/subvault-record-XXXXXX)
trap 'rm -rf "$w"' EXIT
echo "subvault-record-password" >"$w/pw"

for bin in "$@"; do
  v=$("$bin" version | sed -n 's/^restic \([0-9.]*\).*/\1/p')
  out=$here/$v; mkdir -p "$out"
  export RESTIC_PASSWORD_FILE=$w/pw RESTIC_REPOSITORY=$w/repo-$v RESTIC_CACHE_DIR=$w/cache HOME=$w
  rec() { local name=$1; shift; "$@" >"$out/$name.stdout" 2>"$out/$name.stderr"; echo $? >"$out/$name.rc"; }
  "$bin" init >/dev/null 2>&1
  rm -rf "$w/data"; mkdir -p "$w/data/sub" "$w/data/olddir"
  cd "$w" || exit 1
  echo keep >data/keep; echo gone >data/gone; echo mod >data/mod; echo x >data/sub/x
  echo typ >data/typ; echo meta >data/meta; echo bad >"data/bad$(printf '\xff')name"
  echo old >data/olddir/f
  "$bin" backup -q --host rec data >/dev/null
  a=$("$bin" snapshots --json | sed -n 's/.*"short_id":"\([0-9a-f]*\)".*/\1/p')
  sleep 1.1
  rm data/gone; echo modified >data/mod; echo added >data/sub/added
  rm data/typ; ln -s keep data/typ; chmod 600 data/meta; echo changed >"data/bad$(printf '\xff')name"
  echo nl >"data/new
line"
  echo sp >"data/with  space"
  mkdir data/newdir; echo new >data/newdir/f
  rm -r data/olddir
  "$bin" backup -q --host rec data >/dev/null
  b=$("$bin" snapshots --json --latest 1 | sed -n 's/.*"short_id":"\([0-9a-f]*\)".*/\1/p')
  [ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] || { echo "record-diff: no two archives ($a, $b)" >&2; exit 1; }
  rec diff "$bin" diff "$a" "$b"
  rec diff-metadata "$bin" diff --metadata "$a" "$b"
  rec diff-json "$bin" diff --json --metadata "$a" "$b"
  rec diff-same "$bin" diff --metadata "$b" "$b"
  rec diff-missing "$bin" diff "$a" deadbeef
  rec ls "$bin" ls --json "$b"
  cd "$here" || exit 1
done
