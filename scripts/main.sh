#!/usr/bin/env bash
# One command on a fresh machine: environment from the lock file, then the main job on embedded defaults.
source "$(dirname "$0")/env.sh"
set -euo pipefail  # strict mode for this script only (env.sh leaves the caller's options alone)
exec riskml run "$@"
