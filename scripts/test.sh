#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up (once), then pytest. Exit 5 ("no tests
# collected") is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev || exit $?
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc == 5 ]]; then
  echo "test.sh: pytest collected no tests; failing." >&2
  exit 1
fi
exit $rc
