#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to the first comparison table: installs what is missing,
# builds, exports the salary data (first run only) and trains the baselines on CPS1988.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh cerebra   # the command line only; scripts/test.sh builds the tests
./build/cerebra bench tasks --config configs/cps1988.yaml --models ols,xgboost,mlp,lstm,transformer "$@"
