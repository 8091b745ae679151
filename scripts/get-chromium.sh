#!/usr/bin/env bash
# Make sure headless Chromium (Debian package chromium) is installed: the report test opens report.html
# in it. Without it (not root, no package) that one test is skipped and says why; nothing else needs it.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "chromium: installing the Debian package chromium (for the report's browser test)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "chromium: not installed; the report's browser test will be skipped" >&2
else
  echo "chromium: /usr/bin/chromium is missing; install it with: sudo apt-get install chromium" >&2
  echo "          (until then the report's browser test is skipped)" >&2
fi
