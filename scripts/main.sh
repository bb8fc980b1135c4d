#!/usr/bin/env bash
# One command on a fresh machine: environment from the lock file, then the main job on embedded defaults.
source "$(dirname "$0")/env.sh"
exec riskml run "$@"
