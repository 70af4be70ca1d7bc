#!/usr/bin/env bash
# Usage: scripts/with-postgres.sh CMD [ARGS...]
# Starts a throw-away PostgreSQL server on 127.0.0.1 (free port, cluster in a temp dir, trust auth,
# durability off for speed), exports COE_TEST_POSTGRES_URL=postgresql+psycopg://coe@127.0.0.1:PORT/coe_test,
# runs CMD, then stops the server and removes the directory. Exits with CMD's exit code.
# Installs the Debian package `postgresql` when the server binaries are missing (needs root or sudo).
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

find_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "with-postgres: need root (or sudo) to run: $*" >&2; return 1; fi
}

if ! BINDIR="$(find_bindir)"; then
  echo "with-postgres: PostgreSQL server not found; installing the Debian package 'postgresql'" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
  BINDIR="$(find_bindir)" || { echo "with-postgres: initdb/pg_ctl still missing after install" >&2; exit 1; }
fi

# initdb refuses to run as root: run the server as `postgres` (created if needed) when we are root.
RUN=()
if [[ $(id -u) -eq 0 ]]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  if command -v runuser >/dev/null 2>&1; then RUN=(runuser -u postgres --); else RUN=(su postgres -s /bin/sh -c); fi
fi
run_pg() {
  if [[ ${#RUN[@]} -eq 0 ]]; then "$@"
  elif [[ ${RUN[0]} == runuser ]]; then "${RUN[@]}" "$@"
  else "${RUN[@]}" "$(printf '%q ' "$@")"; fi
}

PGTMP="$(mktemp -d "${TMPDIR:-/tmp}/coe-pg.XXXXXX")"
chmod 700 "$PGTMP"
if [[ $(id -u) -eq 0 ]]; then chown postgres: "$PGTMP"; fi

cleanup() {
  local rc=$?
  if [[ -f "$PGTMP/data/postmaster.pid" ]]; then
    run_pg "$BINDIR/pg_ctl" -D "$PGTMP/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PGTMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  local py
  for py in python3 python; do
    if command -v "$py" >/dev/null 2>&1; then
      "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
      return 0
    fi
  done
  echo $((20000 + RANDOM % 20000))
}

run_pg "$BINDIR/initdb" -D "$PGTMP/data" -U coe -A trust -E UTF8 --locale=C.UTF-8 >"$PGTMP/initdb.log" 2>&1 \
  || run_pg "$BINDIR/initdb" -D "$PGTMP/data" -U coe -A trust -E UTF8 --no-locale >"$PGTMP/initdb.log" 2>&1 \
  || { cat "$PGTMP/initdb.log" >&2; echo "with-postgres: initdb failed" >&2; exit 1; }

started=0
for _ in 1 2 3; do
  PORT="$(free_port)"
  if run_pg "$BINDIR/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGTMP -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100" \
      start >/dev/null 2>&1; then
    started=1; break
  fi
done
if [[ $started -ne 1 ]]; then
  cat "$PGTMP/server.log" >&2 || true
  echo "with-postgres: the server did not start" >&2
  exit 1
fi
run_pg "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U coe coe_test

export COE_TEST_POSTGRES_URL="postgresql+psycopg://coe@127.0.0.1:$PORT/coe_test"
echo "with-postgres: PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') at $COE_TEST_POSTGRES_URL" >&2

set +e
"$@"
rc=$?
set -e
exit "$rc"
