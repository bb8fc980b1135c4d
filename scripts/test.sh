#!/usr/bin/env bash
# The test command: environment from the lock file, then pytest.
#   bash scripts/test.sh            fast suite (default)
#   bash scripts/test.sh -m slow    end-to-end: the real `riskml run` CLI on the committed sample tenant
#   bash scripts/test.sh -m ui      real browser: dagster-webserver + headless Debian chromium (installed if missing)
#   bash scripts/test.sh -m services  real Azurite (npm, tools/azurite) and PostgreSQL (Debian), installed if missing
source "$(dirname "$0")/env.sh"
set -euo pipefail  # strict mode for this script only (env.sh leaves the caller's options alone)
if [[ " $* " == *" ui "* ]] && ! command -v chromium >/dev/null 2>&1; then
  echo ">> installing Debian's chromium for the browser tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [[ " $* " == *" services "* ]]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo ">> installing Debian's postgresql for the service tests"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
  if [ ! -x tools/azurite/node_modules/.bin/azurite-blob ]; then
    echo ">> installing Azurite from npm (tools/azurite)"
    (cd tools/azurite && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
set +e
python -m pytest "$@"
rc=$?
[ $rc -eq 5 ] && { echo "no tests selected"; rc=0; }
exit $rc
