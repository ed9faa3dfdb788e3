# A PostgreSQL server of the test run's own: Debian's, installed if missing, a cluster made with
# initdb in a temporary directory, listening only on a Unix socket there (no port to pick), run
# as an unprivileged user (initdb and the server refuse root), stopped and removed at exit.
#
# Source it, then `start_postgres`: it exports WID_TEST_DATABASE_URL, the maintenance database's
# URL; tests make databases of their own beside it.

# The newest server's bin directory (the client package alone has one without initdb).
newest_server() {
    ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname
}

postgres_bin() {
    local found
    found="$(newest_server)"
    if [ -z "$found" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        found="$(newest_server)"
    fi
    [ -n "$found" ] || { echo "PostgreSQL is missing (Debian's package postgresql)" >&2; return 1; }
    echo "$found"
}

start_postgres() {
    local bin dir as=()
    bin="$(postgres_bin)" || return 1
    dir="$(mktemp -d /tmp/wid-postgres.XXXXXX)"
    if [ "$(id -u)" = 0 ]; then
        # The server's user: Debian's package makes `postgres`; else nobody will do.
        local user=postgres
        id postgres >/dev/null 2>&1 || user=nobody
        chown "$user" "$dir"
        as=(runuser -u "$user" --)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -k $dir -c fsync=off -c max_connections=400" start >/dev/null \
        || { cat "$dir/server.log" >&2; return 1; }
    WID_POSTGRES_DIR="$dir"
    WID_POSTGRES_STOP=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
    export WID_TEST_DATABASE_URL="postgres://postgres@localhost/postgres?host=$dir"
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $dir (Unix socket)"
}

stop_postgres() {
    if [ -n "${WID_POSTGRES_DIR:-}" ]; then
        "${WID_POSTGRES_STOP[@]}" >/dev/null 2>&1 || true
        rm -rf "$WID_POSTGRES_DIR"
        WID_POSTGRES_DIR=
    fi
}
