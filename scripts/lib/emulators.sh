# shellcheck shell=bash
# Local AWS engines for Crane's adapter tests. Source this file (it sources
# tools.sh), install the tools, then call crane_emulators_start in the shell
# that runs the tests -- not in a $(...) subshell: it exports variables and
# installs the EXIT/INT/TERM trap that stops the emulators in that shell.
#
#   crane_emulators_start   start DynamoDB Local + moto_server on free ports,
#                           wait until both answer, enable moto's Step
#                           Functions interpreter, export the endpoints:
#     CRANE_TEST_DYNAMODB_ENDPOINT, CRANE_TEST_MOTO_ENDPOINT, AWS_REGION,
#     AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#     AWS_EC2_METADATA_DISABLED
#   crane_emulators_stop    kill them (and their children); idempotent
#   crane_emulators_env     print the exported variables as `export` lines
#
# Logs: .cache/logs/dynamodb-local-PORT.log and .cache/logs/moto-PORT.log (named
# by port so parallel runs don't share a file; ones older than 2 days are pruned).
# The installers in tools.sh must have run first.

if [[ -n "${CRANE_EMULATORS_SH_LOADED:-}" ]]; then
  return 0
fi
CRANE_EMULATORS_SH_LOADED=1

# shellcheck source=scripts/lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

# Seconds to wait for each emulator to answer.
CRANE_EMULATOR_WAIT_SECS="${CRANE_EMULATOR_WAIT_SECS:-60}"
CRANE_EMULATOR_PIDS=()

# crane_free_ports [N]: prints N (default 1) distinct ports that are free right
# now, one a line. All sockets stay open until all are picked, so the ports
# differ. Bound on 0.0.0.0 because DynamoDB Local listens on every interface:
# a port free there is free on 127.0.0.1 too.
crane_free_ports() {
  "$CRANE_PYTHON" -c 'import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()' "${1:-1}"
}

# crane__http METHOD URL [BODY [HEADER...]]: prints the HTTP status code and
# returns 0 if the server answered at all (any status), non-zero otherwise.
crane__http() {
  local method=$1 url=$2 body=${3-} h
  shift 2
  if (($#)); then shift; fi
  if command -v curl >/dev/null 2>&1; then
    local args=(-s -o /dev/null -w '%{http_code}' --max-time 3 -X "$method")
    for h in "$@"; do args+=(-H "$h"); done
    [[ "$method" == GET ]] || args+=(--data-binary "$body")
    local code
    code=$(curl "${args[@]}" "$url" 2>/dev/null) || return 1
    [[ "$code" != 000 ]] || return 1
    printf '%s\n' "$code"
  else
    "$CRANE_PYTHON" - "$method" "$url" "$body" "$@" <<'PY'
import sys, urllib.request, urllib.error
method, url, body, *headers = sys.argv[1:]
req = urllib.request.Request(url, method=method,
                             data=None if method == "GET" else body.encode())
for h in headers:
    k, _, v = h.partition(":")
    req.add_header(k.strip(), v.strip())
try:
    with urllib.request.urlopen(req, timeout=3) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    sys.exit(1)
PY
  fi
}

crane__dynamodb_ping() {
  # DynamoDB Local accepts any signature; it only needs the header present.
  crane__http POST "$1" '{}' \
    'Content-Type: application/x-amz-json-1.0' \
    'X-Amz-Target: DynamoDB_20120810.ListTables' \
    'Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0000' \
    'X-Amz-Date: 20240101T000000Z' >/dev/null
}

crane__moto_ping() {
  crane__http GET "$1/moto-api/" >/dev/null
}

# crane__wait_ready NAME PID LOG PINGFN URL
crane__wait_ready() {
  local name=$1 pid=$2 log=$3 ping=$4 url=$5
  local deadline=$((SECONDS + CRANE_EMULATOR_WAIT_SECS))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      crane_err "$name exited during startup (pid $pid); log: $log"
      crane_log_tail "$log"
      return 1
    fi
    if grep -qiE 'address already in use|BindException' "$log" 2>/dev/null; then
      crane_err "$name could not bind its port ($url): another process took it; log: $log"
      crane_log_tail "$log"
      return 1
    fi
    if "$ping" "$url"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      crane_err "$name did not answer at $url within ${CRANE_EMULATOR_WAIT_SECS}s" \
        "(pid $pid still running; raise CRANE_EMULATOR_WAIT_SECS if the machine is slow); log: $log"
      crane_log_tail "$log"
      return 1
    fi
    sleep 0.2
  done
}

# All descendants of a PID, deepest first.
crane__descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    crane__descendants "$child"
    printf '%s\n' "$child"
  done
}

crane_emulators_stop() {
  ((${#CRANE_EMULATOR_PIDS[@]})) || return 0
  local pid p all=()
  for pid in "${CRANE_EMULATOR_PIDS[@]}"; do
    for p in $(crane__descendants "$pid"); do all+=("$p"); done
    all+=("$pid")
  done
  CRANE_EMULATOR_PIDS=()
  kill -TERM "${all[@]}" 2>/dev/null || true
  # Give them up to ~5 s to exit, then force.
  local i alive
  for ((i = 0; i < 25; i++)); do
    alive=()
    for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    ((${#alive[@]})) || break
    sleep 0.2
  done
  if ((${#alive[@]})); then
    kill -KILL "${alive[@]}" 2>/dev/null || true
  fi
  # Reap them if they are our children (quietly; they may not be).
  for p in "${all[@]}"; do wait "$p" 2>/dev/null || true; done
  return 0
}

crane__install_trap() {
  trap 'crane_emulators_stop' EXIT
  trap 'crane_emulators_stop; trap - INT; exit 130' INT
  trap 'crane_emulators_stop; trap - TERM; exit 143' TERM
}

crane_emulators_env() {
  local v
  for v in CRANE_TEST_DYNAMODB_ENDPOINT CRANE_TEST_MOTO_ENDPOINT AWS_REGION AWS_DEFAULT_REGION \
           AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_EC2_METADATA_DISABLED; do
    printf 'export %s=%q\n' "$v" "${!v-}"
  done
}

# Launch DynamoDB Local on $CRANE__DDB_PORT without waiting; sets CRANE__DDB_PID/_LOG.
crane__launch_dynamodb_local() {
  local dir=$CRANE_DYNAMODB_LOCAL_DIR log=$CRANE_LOG_DIR/dynamodb-local-$CRANE__DDB_PORT.log port
  if [[ ! -f "$dir/DynamoDBLocal.jar" ]]; then
    crane_err "DynamoDB Local is not installed in $dir: run crane_install_dynamodb_local first."
    return 1
  fi
  if ! command -v java >/dev/null 2>&1; then
    crane_err "java not found: DynamoDB Local needs a Java 17+ runtime" \
      "(e.g. 'apt-get install openjdk-17-jre-headless')."
    return 1
  fi
  port=$CRANE__DDB_PORT
  # It binds 0.0.0.0 (no host flag) and hangs if the port is taken: hence the
  # port picked by crane_free_ports and the bind-error check in crane__wait_ready.
  (cd "$dir" && exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
     -inMemory -port "$port" -disableTelemetry) </dev/null >"$log" 2>&1 &
  CRANE__DDB_PID=$!
  CRANE__DDB_LOG=$log
  CRANE_EMULATOR_PIDS+=("$CRANE__DDB_PID")
}

crane__wait_dynamodb_local() {
  local url="http://127.0.0.1:$CRANE__DDB_PORT"
  crane__wait_ready "DynamoDB Local" "$CRANE__DDB_PID" "$CRANE__DDB_LOG" crane__dynamodb_ping "$url" \
    || return 1
  export CRANE_TEST_DYNAMODB_ENDPOINT=$url
  crane_note "DynamoDB Local ready at $CRANE_TEST_DYNAMODB_ENDPOINT (pid $CRANE__DDB_PID)"
}

crane__start_moto() {
  local log=$CRANE_LOG_DIR/moto-$CRANE__MOTO_PORT.log port bin=$CRANE_VENV/bin/moto_server
  if [[ ! -x "$bin" ]]; then
    crane_err "$bin not found: run crane_install_python_tools first."
    return 1
  fi
  port=$CRANE__MOTO_PORT
  "$bin" -H 127.0.0.1 -p "$port" </dev/null >"$log" 2>&1 &
  local pid=$!
  CRANE_EMULATOR_PIDS+=("$pid")
  local url="http://127.0.0.1:$port"
  crane__wait_ready "moto_server" "$pid" "$log" crane__moto_ping "$url" || return 1

  # Make Step Functions executions really run (Lambda tasks stay stubs).
  local code
  code=$(crane__http POST "$url/moto-api/config" \
           '{"stepfunctions":{"execute_state_machine":true},"lambda":{"use_docker":false}}' \
           'Content-Type: application/json') || code=none
  if [[ "$code" != 2?? ]]; then
    crane_err "POST $url/moto-api/config (enable the Step Functions interpreter) answered '$code';" \
      "check the moto version pinned in scripts/requirements-tools.txt; log: $log"
    crane_log_tail "$log"
    return 1
  fi
  export CRANE_TEST_MOTO_ENDPOINT=$url
  crane_note "moto_server ready at $CRANE_TEST_MOTO_ENDPOINT (pid $pid, Step Functions interpreter on)"
}

crane_emulators_start() {
  mkdir -p "$CRANE_LOG_DIR" || { crane_err "cannot create $CRANE_LOG_DIR"; return 1; }
  find "$CRANE_LOG_DIR" -maxdepth 1 \( -name 'dynamodb-local-*.log' -o -name 'moto-*.log' \) \
    -mtime +1 -delete 2>/dev/null || true
  local ports
  if ! ports=$(crane_free_ports 2) || [[ -z "$ports" ]]; then
    crane_err "could not pick free ports with '$CRANE_PYTHON -c ...socket.bind(0)'."
    return 1
  fi
  CRANE__DDB_PORT=${ports%%$'\n'*}
  CRANE__MOTO_PORT=${ports##*$'\n'}
  crane__install_trap
  # Launch the JVM first and start moto (ready in ~0.5 s) while it boots (~3 s).
  crane__launch_dynamodb_local || { crane_emulators_stop; return 1; }
  crane__start_moto || { crane_emulators_stop; return 1; }
  crane__wait_dynamodb_local || { crane_emulators_stop; return 1; }
  export AWS_REGION=us-east-1
  export AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=test
  export AWS_SECRET_ACCESS_KEY=test
  export AWS_EC2_METADATA_DISABLED=true
}
