# Sourced by the other scripts: create .venv from requirements.lock once (Python >= 3.11), then reuse it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
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
export PATH="$PWD/.venv/bin:$PATH"
