#!/usr/bin/env bash
# Set up a virtual environment (if needed) and run the main job or the test suite.
#   bash scripts/run.sh demo    # the main job: a multi-turn session on the packaged model, offline
#   bash scripts/run.sh test    # the whole test suite (installs the test extras and Chromium if missing)
# Extra arguments after the verb go to `convsynth demo` / pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
verb="${1:-demo}"; shift || true
VENV="${CONVSYNTH_VENV:-.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned: on our machines this takes the CPU wheel that lies on disk instead of a multi-GB CUDA build.
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"

case "$verb" in
  demo)
    "$PY" -m pip install -q -e .
    exec "$VENV/bin/convsynth" demo "$@"
    ;;
  test)
    "$PY" -m pip install -q -e ".[test]"
    if [ ! -x /usr/bin/chromium ]; then
      if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "installing Chromium for the browser test (Debian's package)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/tmp/convsynth-apt.log 2>&1 \
          || { echo "apt-get install chromium failed; see /tmp/convsynth-apt.log"; exit 1; }
      else
        echo "note: /usr/bin/chromium is missing and cannot be installed here (not root); the browser test will skip"
      fi
    fi
    if ! command -v bwrap >/dev/null; then
      if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "installing bubblewrap for the sandbox's isolation (Debian's package)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap) >/tmp/convsynth-apt.log 2>&1 \
          || { echo "apt-get install bubblewrap failed; see /tmp/convsynth-apt.log"; exit 1; }
      else
        echo "note: bwrap is missing and cannot be installed here (not root); the sandbox runs unisolated and tests/test_isolation.py skips"
      fi
    fi
    export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    exec "$PY" -m pytest tests notebooks --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: bash scripts/run.sh demo|test [args...]" >&2; exit 2 ;;
esac
