#!/usr/bin/env bash
# Make sure Debian's headless-capable chromium is at /usr/bin/chromium, for the browser test of the
# web lab (tests/test_web_browser.py drives it with Playwright via executable_path; we never run
# `playwright install`, which downloads its own browser). Installs it once with apt when missing
# (the test machines run as root). Set OPTIMLAB_NO_CHROMIUM=1 to never install it.
set -uo pipefail
[ -x /usr/bin/chromium ] && exit 0
[ -n "${OPTIMLAB_NO_CHROMIUM:-}" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "optimlab: /usr/bin/chromium missing and cannot apt-get it here; tests/test_web_browser.py will fail (OPTIMLAB_SKIP_BROWSER=1 skips it)" >&2
  exit 0
fi
echo "optimlab: installing chromium for the browser test (first run only)..." >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -q && apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; } >/tmp/optimlab-chromium-install.log 2>&1 \
  || { echo "optimlab: apt-get install chromium failed (see /tmp/optimlab-chromium-install.log); tests/test_web_browser.py will fail (OPTIMLAB_SKIP_BROWSER=1 skips it)" >&2; exit 0; }
