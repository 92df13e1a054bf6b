#!/usr/bin/env bash
# Installs whatever `npm start` and `npm test` need and this machine lacks: Debian packages (Redis,
# PostgreSQL 15, ClickHouse server, Java, Maven, Chromium), the npm packages, and the pinned Kafka jars.
# Each step is skipped when its result is already there, so a warm run costs well under a second.
# A missing prerequisite that cannot be installed ends with one line that says what to do.
set -uo pipefail
cd "$(dirname "$0")/.."

fail() { echo "prepare: $*" >&2; exit 1; }

stack_dir=${STACK_DIR:-$PWD/.stack}
mkdir -p "$stack_dir" || fail "cannot create the data folder $stack_dir: set STACK_DIR to a writable folder"

# --- Debian packages ------------------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
# The dashboards' browser tests drive Debian's Chromium through playwright-core (never a downloaded browser).
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    fail "missing Debian packages: ${missing[*]}; install them as root (apt-get install -y ${missing[*]}) and run again"
  fi
  command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get here: install them with this system's package manager"
  echo "prepare: installing ${missing[*]} (once)"
  # Packages must not start their own system services: the stack runs private servers on its own ports.
  policy=/usr/sbin/policy-rc.d
  [ -e "$policy" ] && had_policy=1 || had_policy=0
  if [ "$had_policy" = 0 ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; fi
  log="$stack_dir/apt.log"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    [ "$had_policy" = 1 ] || rm -f "$policy"
    fail "apt-get could not install ${missing[*]}; see $log"
  fi
  [ "$had_policy" = 1 ] || rm -f "$policy"
fi

java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
[ "${java_major:-0}" -ge 17 ] 2>/dev/null || fail "Kafka needs Java 17 or newer, found ${java_major:-none}: apt-get install openjdk-17-jre-headless"

# --- npm packages ---------------------------------------------------------------------------------
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "prepare: installing npm packages"
  # `npm install`, not `npm ci`: chdb lists optional native packages for other platforms that the
  # registry here does not serve, so the lock cannot name them and `npm ci` refuses it. The lock
  # still pins every package this platform installs.
  npm install --no-audit --no-fund --loglevel=error >"$stack_dir/npm.log" 2>&1 || fail "npm install failed; see $stack_dir/npm.log"
fi

# --- Kafka jars (pinned in stack/pom.xml) ---------------------------------------------------------
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' stack/pom.xml)
libs="$stack_dir/kafka/libs-$kafka_version"
if [ ! -f "$libs/.complete" ]; then
  echo "prepare: fetching Apache Kafka $kafka_version jars"
  mkdir -p "$libs"
  mvn -q -B -f stack/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" \
    >"$stack_dir/maven.log" 2>&1 || fail "Maven could not fetch the Kafka $kafka_version jars; see $stack_dir/maven.log"
  touch "$libs/.complete"
fi
# --- Python tools for the tests (pinned in stack/requirements.txt) ---------------------------------
venv="$stack_dir/venv"
if [ ! -f "$venv/.complete" ] || [ stack/requirements.txt -nt "$venv/.complete" ]; then
  command -v python3 >/dev/null || fail "Python 3 is missing: apt-get install python3 python3-venv"
  echo "prepare: installing the Python test tools (once)"
  { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } >"$stack_dir/pip.log" 2>&1 \
    || fail "python3 -m venv failed (apt-get install python3-venv); see $stack_dir/pip.log"
  "$venv/bin/pip" install -q --disable-pip-version-check -r stack/requirements.txt >>"$stack_dir/pip.log" 2>&1 \
    || fail "pip could not install stack/requirements.txt; see $stack_dir/pip.log"
  touch "$venv/.complete"
fi
exit 0
