# shellcheck shell=bash
# Idempotent installers for Crane's test tools. Source this file, then call:
#
#   crane_install_dynamodb_local   -> .cache/dynamodb-local/DynamoDBLocal.jar
#   crane_install_python_tools     -> .cache/venv (pins in scripts/requirements-tools.txt)
#   crane_tools_path               -> puts .cache/venv/bin first on PATH
#   crane_install_chromium         -> Chromium from the Debian package (apt-get, as root)
#   crane_install_browser_deps     -> .cache/browser-test (tests/browser/package-lock.json)
#
# Everything is cached under $CRANE_REPO/.cache (git-ignored); a second run
# with nothing changed skips both installers in well under a second.
#
# On failure each function prints what failed and what to install or check,
# then returns non-zero (it returns rather than exits, so sourcing this file
# into an interactive shell is safe). Callers decide whether to stop; the
# functions do not rely on `set -e`, because bash ignores it inside a function
# called from an `if` or `||` context.

if [[ -n "${CRANE_TOOLS_SH_LOADED:-}" ]]; then
  return 0
fi
CRANE_TOOLS_SH_LOADED=1

CRANE_REPO="${CRANE_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
CRANE_CACHE="${CRANE_CACHE:-$CRANE_REPO/.cache}"
CRANE_LOG_DIR="${CRANE_LOG_DIR:-$CRANE_CACHE/logs}"

# DynamoDB Local 1.25.1 ships inside this npm package (folder package/emulator).
CRANE_DYNAMODB_LOCAL_NPM="amplify-dynamodb-simulator@2.9.30"
CRANE_DYNAMODB_LOCAL_DIR="$CRANE_CACHE/dynamodb-local"

CRANE_VENV="$CRANE_CACHE/venv"
CRANE_TOOLS_REQUIREMENTS="$CRANE_REPO/scripts/requirements-tools.txt"
# Interpreter used to create the venv; override with CRANE_PYTHON=/path/to/python3.
CRANE_PYTHON="${CRANE_PYTHON:-python3}"

crane_err() {
  printf 'crane: error: %s\n' "$*" >&2
}

crane_note() {
  printf 'crane: %s\n' "$*" >&2
}

# Prints the last lines of a log file to stderr, indented, if it exists.
crane_log_tail() {
  local file=$1 lines=${2:-30}
  if [[ -s "$file" ]]; then
    printf 'crane: last %s lines of %s:\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" | sed 's/^/    | /' >&2
  fi
}

# ---------------------------------------------------------------------------
# DynamoDB Local
# ---------------------------------------------------------------------------
crane_install_dynamodb_local() {
  local dir=$CRANE_DYNAMODB_LOCAL_DIR
  if [[ -f "$dir/DynamoDBLocal.jar" && -d "$dir/DynamoDBLocal_lib" ]]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    crane_err "npm not found: it is needed to fetch DynamoDB Local ($CRANE_DYNAMODB_LOCAL_NPM)." \
      "Install Node.js 20 with npm (e.g. 'apt-get install nodejs npm') and re-run."
    return 1
  fi
  if ! mkdir -p "$CRANE_CACHE" "$CRANE_LOG_DIR"; then
    crane_err "cannot create $CRANE_CACHE: check permissions and free disk space."
    return 1
  fi

  crane_note "fetching DynamoDB Local from npm package $CRANE_DYNAMODB_LOCAL_NPM (~57 MB, first run only)"
  local tmp log=$CRANE_LOG_DIR/dynamodb-local-install.log
  if ! tmp=$(mktemp -d "$CRANE_CACHE/dynamodb-local.tmp.XXXXXX"); then
    crane_err "mktemp failed under $CRANE_CACHE: check permissions and free disk space."
    return 1
  fi
  # npm pack only downloads the tarball: no install scripts, no dependencies.
  if ! (cd "$tmp" && npm pack --silent --no-fund --no-audit --no-update-notifier \
          "$CRANE_DYNAMODB_LOCAL_NPM") >"$log" 2>&1; then
    crane_err "'npm pack $CRANE_DYNAMODB_LOCAL_NPM' failed." \
      "Check that the npm registry is reachable (npm ping) and that npm works; log: $log"
    crane_log_tail "$log"
    rm -rf "$tmp"
    return 1
  fi
  local tgz
  tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' -print -quit)
  if [[ -z "$tgz" ]]; then
    crane_err "'npm pack $CRANE_DYNAMODB_LOCAL_NPM' produced no .tgz in $tmp; log: $log"
    crane_log_tail "$log"
    rm -rf "$tmp"
    return 1
  fi
  mkdir -p "$tmp/x"
  if ! tar -xzf "$tgz" -C "$tmp/x" package/emulator >>"$log" 2>&1; then
    crane_err "could not untar package/emulator from $tgz (is 'tar' with gzip installed? disk full?); log: $log"
    crane_log_tail "$log"
    rm -rf "$tmp"
    return 1
  fi
  if [[ ! -f "$tmp/x/package/emulator/DynamoDBLocal.jar" ]]; then
    crane_err "$CRANE_DYNAMODB_LOCAL_NPM has no package/emulator/DynamoDBLocal.jar:" \
      "the package layout changed; pin a version that ships it in tools.sh."
    rm -rf "$tmp"
    return 1
  fi
  # Move into place last, so an interrupted install never looks complete.
  rm -rf "$dir"
  if ! mv "$tmp/x/package/emulator" "$dir"; then
    crane_err "could not move DynamoDB Local into $dir."
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$tmp"
  crane_note "DynamoDB Local installed in $dir"
}

# ---------------------------------------------------------------------------
# Python tools: moto server, cfn-lint, statelint, aws-sam-cli, cargo-lambda
# ---------------------------------------------------------------------------

# Hash of what the venv must match: the pins and the interpreter version.
crane__python_tools_hash() {
  local pyver
  pyver=$("$CRANE_PYTHON" -c 'import sys; print(sys.version)' 2>/dev/null) || return 1
  { cat "$CRANE_TOOLS_REQUIREMENTS"; printf '%s\n' "$pyver"; } | sha256sum | cut -d' ' -f1
}

crane_install_python_tools() {
  local venv=$CRANE_VENV req=$CRANE_TOOLS_REQUIREMENTS
  local stamp=$venv/.crane-requirements.sha256
  local log=$CRANE_LOG_DIR/python-tools-install.log

  if [[ ! -f "$req" ]]; then
    crane_err "missing $req (the pinned tool requirements); restore it from git."
    return 1
  fi
  if ! command -v "$CRANE_PYTHON" >/dev/null 2>&1; then
    crane_err "'$CRANE_PYTHON' not found: Python >= 3.10 with the venv module is needed" \
      "(e.g. 'apt-get install python3 python3-venv'), or set CRANE_PYTHON=/path/to/python3."
    return 1
  fi
  if ! "$CRANE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    crane_err "$("$CRANE_PYTHON" --version 2>&1) is too old: aws-sam-cli needs Python >= 3.10." \
      "Install a newer python3 or set CRANE_PYTHON=/path/to/python3.10+."
    return 1
  fi
  local want
  if ! want=$(crane__python_tools_hash); then
    crane_err "could not run '$CRANE_PYTHON' to hash the tool requirements."
    return 1
  fi

  # Fast path: stamp matches and the venv's interpreter still runs.
  if [[ -f "$stamp" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]] \
     && "$venv/bin/python" -c '' >/dev/null 2>&1; then
    return 0
  fi

  if ! mkdir -p "$CRANE_CACHE" "$CRANE_LOG_DIR"; then
    crane_err "cannot create $CRANE_CACHE: check permissions and free disk space."
    return 1
  fi
  rm -f "$stamp"
  : >"$log"
  # Reuse a working venv (a changed pin only upgrades/downgrades what changed);
  # recreate a broken one (e.g. its interpreter was removed or upgraded).
  if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    rm -rf "$venv"
    crane_note "creating venv $venv"
    if ! "$CRANE_PYTHON" -m venv "$venv" >>"$log" 2>&1; then
      crane_err "'$CRANE_PYTHON -m venv $venv' failed: install the venv module" \
        "(e.g. 'apt-get install python3-venv'); log: $log"
      crane_log_tail "$log"
      rm -rf "$venv"
      return 1
    fi
  fi

  crane_note "installing pinned Python tools from ${req#"$CRANE_REPO"/} into $venv (about 1-2 min on a cold cache)"
  if ! PIP_NO_INPUT=1 "$venv/bin/python" -m pip install --disable-pip-version-check -q \
         -r "$req" >>"$log" 2>&1; then
    crane_err "'pip install -r $req' failed." \
      "Check that PyPI is reachable (pip download works) and that every pin in that file exists" \
      "and installs on $("$venv/bin/python" --version 2>&1); log: $log"
    crane_log_tail "$log" 40
    return 1
  fi

  local tool missing=()
  for tool in moto_server cfn-lint statelint sam cargo-lambda; do
    [[ -x "$venv/bin/$tool" ]] || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    crane_err "pip install succeeded but these commands are missing from $venv/bin: ${missing[*]}." \
      "Check the pins in $req."
    return 1
  fi

  printf '%s\n' "$want" >"$stamp"
  crane_note "Python tools installed in $venv"
}

# Puts the venv's tools (moto_server, cfn-lint, statelint, sam, cargo-lambda)
# first on PATH, once.
crane_tools_path() {
  case ":$PATH:" in
    *":$CRANE_VENV/bin:"*) ;;
    *) export PATH="$CRANE_VENV/bin:$PATH" ;;
  esac
}

# ---------------------------------------------------------------------------
# Browser tests: Chromium (the distribution's package) and puppeteer-core
# ---------------------------------------------------------------------------
CRANE_BROWSER_DEPS="$CRANE_CACHE/browser-test"
CRANE_BROWSER_PACKAGE="$CRANE_REPO/tests/browser"

# Prints the Chromium binary to drive: $CRANE_CHROMIUM, else chromium on PATH.
crane_chromium_path() {
  if [[ -n "${CRANE_CHROMIUM:-}" ]]; then
    [[ -x "$CRANE_CHROMIUM" ]] && printf '%s\n' "$CRANE_CHROMIUM"
    return
  fi
  command -v chromium || command -v chromium-browser
}

crane_install_chromium() {
  if crane_chromium_path >/dev/null; then
    return 0
  fi
  if [[ -n "${CRANE_CHROMIUM:-}" ]]; then
    crane_err "CRANE_CHROMIUM=$CRANE_CHROMIUM is not an executable: point it at Chromium or unset it."
    return 1
  fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    crane_err "Chromium is needed for the console's browser tests and is not installed:" \
      "install it (Debian: 'sudo apt-get install -y chromium') or set CRANE_CHROMIUM=/path/to/chromium, then re-run."
    return 1
  fi
  mkdir -p "$CRANE_LOG_DIR"
  local log=$CRANE_LOG_DIR/chromium-install.log
  crane_note "installing Chromium with apt-get (first run only; log: $log)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
         || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }; } >"$log" 2>&1; then
    crane_err "'apt-get install -y chromium' failed; log: $log"
    crane_log_tail "$log"
    return 1
  fi
  crane_chromium_path >/dev/null || {
    crane_err "apt-get installed chromium but no 'chromium' is on PATH; set CRANE_CHROMIUM."
    return 1
  }
}

# puppeteer-core (drives an existing Chromium, downloads none) pinned by
# tests/browser/package-lock.json, installed with `npm ci` into .cache/browser-test.
crane_install_browser_deps() {
  local dir=$CRANE_BROWSER_DEPS lock=$CRANE_BROWSER_PACKAGE/package-lock.json
  local stamp=$dir/.crane-lock.sha256 log=$CRANE_LOG_DIR/browser-deps-install.log want
  if ! command -v npm >/dev/null 2>&1; then
    crane_err "npm not found: the browser tests need Node.js >= 18 with npm (e.g. 'apt-get install nodejs npm')."
    return 1
  fi
  want=$(cat "$CRANE_BROWSER_PACKAGE/package.json" "$lock" | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$dir/node_modules/puppeteer-core" ]]; then
    return 0
  fi
  mkdir -p "$dir" "$CRANE_LOG_DIR"
  rm -f "$stamp"
  cp "$CRANE_BROWSER_PACKAGE/package.json" "$lock" "$dir/"
  crane_note "installing puppeteer-core into $dir (npm ci; log: $log)"
  if ! (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --no-update-notifier) >"$log" 2>&1; then
    crane_err "'npm ci' of tests/browser/package-lock.json failed: is the npm registry reachable? log: $log"
    crane_log_tail "$log"
    return 1
  fi
  printf '%s\n' "$want" >"$stamp"
}
