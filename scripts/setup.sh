#!/usr/bin/env bash
# Set up everything impactstudy needs on a fresh Debian machine with Python 3.11:
# system packages (only what is missing), a virtual environment in .venv, and the pinned
# Python packages of requirements.lock (or requirements-dev.lock with --dev).
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK=requirements.lock
# fonts-noto-cjk: the report's Chinese (PDF, charts, browser); and, for the tests only (--dev):
# poppler-utils, the PDF tests (pdftotext, pdffonts, pdftoppm); chromium, the browser tests
APT_PACKAGES=(fonts-noto-cjk)
if [[ "${1:-}" == "--dev" ]]; then
  LOCK=requirements-dev.lock
  APT_PACKAGES+=(poppler-utils chromium)
fi

PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  local need=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if ((${#need[@]})); then
    echo "setup: installing system packages: ${need[*]}" >&2
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  apt_install python3 python3-venv
  PYTHON=python3
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  apt_install python3-venv
fi
if ((${#APT_PACKAGES[@]})); then
  apt_install "${APT_PACKAGES[@]}"
fi
# matplotlib's font list, if built before fonts-noto-cjk was installed, lacks the CJK font:
# drop it once (matplotlib rebuilds it on next use, about 0.6 s)
mpl_cache=${MPLCONFIGDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/matplotlib}
for f in "$mpl_cache"/fontlist-v*.json; do
  if [[ -f "$f" ]] && ! grep -q "Noto Sans CJK" "$f"; then
    rm -f "$f"
  fi
done

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum "$LOCK" pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$LOCK"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
