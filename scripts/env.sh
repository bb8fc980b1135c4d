# Sourced by scripts/main.sh and scripts/test.sh, and by users (`source scripts/env.sh`): creates .venv from
# requirements.lock once (Python >= 3.11), then reuses it; puts .venv/bin on PATH and sets DAGSTER_HOME.
# Strict mode (set -euo pipefail) lives only in the subshell below, so the caller's shell options are left as
# they were and a failure returns instead of exiting the caller's shell.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || return 1 2>/dev/null || exit 1
(
  set -euo pipefail
  PY=${PYTHON:-python3}
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "riskml needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1
  fi
  stamp=.venv/.riskml-installed
  if [ ! -f "$stamp" ] || ! cmp -s requirements.lock "$stamp"; then
    echo ">> creating .venv from requirements.lock (first run takes a few minutes)"
    "$PY" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements.lock
    .venv/bin/python -m pip install --quiet --no-deps -e .
    cp requirements.lock "$stamp"
  fi
  export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster}"
  mkdir -p "$DAGSTER_HOME"
  [ -f "$DAGSTER_HOME/dagster.yaml" ] || cp config/dagster_home.yaml "$DAGSTER_HOME/dagster.yaml"
)
# (not `( ... ) || handler`: bash ignores set -e inside a subshell on the left of || or in an if condition)
_riskml_rc=$?
if [ "$_riskml_rc" -ne 0 ]; then
  echo "scripts/env.sh: environment setup failed (exit $_riskml_rc)" >&2
  return "$_riskml_rc" 2>/dev/null || exit "$_riskml_rc"
fi
unset _riskml_rc
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster}"
export PATH="$PWD/.venv/bin:$PATH"
