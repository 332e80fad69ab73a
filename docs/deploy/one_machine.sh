#!/usr/bin/env bash
# The 4-host layout of docs/deploy.md on one machine, by ports: a database "host"
# (PostgreSQL on 127.0.0.1:55432), a tracking "host" (protolab server on 127.0.0.1:5050)
# and two worker "hosts" (separate folders and process trees) on one study.
#
#   bash docs/deploy/one_machine.sh [N_TRIALS]      # from the repository root
#
# Needs PostgreSQL's server binaries (apt-get install postgresql). Everything lives under
# $ROOT (default /tmp/protolab-deploy) and is stopped when the script ends.
set -euo pipefail
N_TRIALS=${1:-8}
ROOT=${ROOT:-/tmp/protolab-deploy}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PL="$REPO/.venv/bin/protolab"
PG=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DB_PORT=55432 TRACKING_PORT=5050
rm -rf "$ROOT" && mkdir -p "$ROOT" && chmod 755 "$ROOT"
as_pg=() && [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --) && chown postgres "$ROOT"

# --- host 1: the database ----------------------------------------------------------------
echo pgadmin > "$ROOT/pw" && { [ -z "${as_pg[*]}" ] || chown postgres "$ROOT/pw"; }
"${as_pg[@]}" "$PG/initdb" -D "$ROOT/pg" -A scram-sha-256 -U postgres --pwfile="$ROOT/pw" >/dev/null
"${as_pg[@]}" "$PG/pg_ctl" -D "$ROOT/pg" -w -l "$ROOT/pg.log" \
  -o "-h 127.0.0.1 -p $DB_PORT -k $ROOT" start >/dev/null
trap '"${as_pg[@]}" "$PG/pg_ctl" -D "$ROOT/pg" -m fast stop >/dev/null; kill $(jobs -p) 2>/dev/null || true' EXIT
for sql in "CREATE USER protolab PASSWORD 'team-pw'" "CREATE DATABASE optuna OWNER protolab" \
           "CREATE DATABASE mlflow OWNER protolab"; do
  PGPASSWORD=pgadmin "$PG/psql" -q -h 127.0.0.1 -p $DB_PORT -U postgres -c "$sql"
done
export PGPASSWORD=team-pw  # libpq reads it: no password in any URL or command line below

# --- host 2: the tracking server ---------------------------------------------------------
MLFLOW_BACKEND_STORE_URI=postgresql://protolab@127.0.0.1:$DB_PORT/mlflow \
  "$PL" server --port $TRACKING_PORT --artifacts "$ROOT/mlartifacts" > "$ROOT/server.log" 2>&1 &
until grep -q "ready after" "$ROOT/server.log"; do sleep 1; done
cat "$ROOT/server.log" | grep -A1 "^MLflow tracking server"

# --- hosts 3 and 4: workers, each in its own folder (own process tree, own stores view) --
for w in w1 w2; do
  mkdir -p "$ROOT/$w" && cp -r "$REPO/configs" "$REPO/experiments" "$ROOT/$w/"
done
t0=$(date +%s) pids=()
for w in w1 w2; do
  (cd "$ROOT/$w" && "$PL" sweep configs/digits_mlp.yaml \
     study.storage=postgresql://protolab@127.0.0.1:$DB_PORT/optuna \
     tracking.uri=http://127.0.0.1:$TRACKING_PORT \
     study.name=team-digits study.n_trials="$N_TRIALS" train.epochs=3 backends=[lightning] \
     hardware.threads=1 > "$ROOT/$w.log" 2>&1) &
  pids+=($!)
done
wait "${pids[@]}"
echo "2 worker hosts finished $N_TRIALS trials in $(( $(date +%s) - t0 )) s"
tail -n 3 "$ROOT/w1.log" "$ROOT/w2.log"
"$PL" ls --uri http://127.0.0.1:$TRACKING_PORT \
  --storage postgresql://protolab@127.0.0.1:$DB_PORT/optuna || true
