# Sourced by scripts/run and scripts/test: find a Python >= 3.12, make .venv, install douane.
# Usage: bootstrap [extras]   (sets $VENV_PY)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

_ok_python() {  # prints the interpreter if it runs and is >= 3.12
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1 && echo "$1"
}

find_python() {
  if [ -n "${DOUANE_PYTHON:-}" ]; then
    _ok_python "$DOUANE_PYTHON" || { echo "DOUANE_PYTHON=$DOUANE_PYTHON is not a Python >= 3.12" >&2; return 1; }
    return 0
  fi
  local c
  for c in python3.14 python3.13 python3.12 python3; do
    if command -v "$c" >/dev/null 2>&1 && _ok_python "$(command -v "$c")"; then return 0; fi
  done
  # pyenv installs versions that its shims only expose when selected: look under its root.
  local roots=()
  command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null)")
  roots+=("${PYENV_ROOT:-$HOME/.pyenv}")
  for r in "${roots[@]}"; do
    for c in $(ls -d "$r"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
      _ok_python "$c" && return 0
    done
  done
  for c in /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    [ -x "$c" ] && _ok_python "$c" && return 0
  done
  echo "douane needs Python >= 3.12: install one, or point DOUANE_PYTHON at it" >&2
  return 1
}

bootstrap() {
  local extras="${1:-}"
  local want stamp="$VENV/.douane-installed"
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${extras:-base}"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && grep -qx -- "$want" "$stamp"; then
    VENV_PY="$VENV/bin/python"; return 0
  fi
  # dev extras include the base install: a stamp for "dev" satisfies a base request too
  if [ -z "$extras" ] && [ -f "$stamp" ] && grep -qx -- "${want%-base}-dev" "$stamp"; then
    VENV_PY="$VENV/bin/python"; return 0
  fi
  local py
  py="$(find_python)"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "douane: creating .venv with $py" >&2
    "$py" -m venv "$VENV"
  fi
  echo "douane: installing dependencies into .venv (first use only)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  local spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  "$VENV/bin/python" -m pip install --quiet -e "$spec" >&2
  echo "$want" > "$stamp"
  VENV_PY="$VENV/bin/python"
}
