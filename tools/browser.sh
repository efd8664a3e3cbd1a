#!/usr/bin/env bash
# `make browser`: the headless Chromium and its WebDriver that the dashboard's browser tests drive
# (tests/sandbox/test_dashboard.py, tests/envtest/test_dashboard.py), from Debian's packages
# `chromium` and `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver).
#
# Nothing is done when both are installed. Otherwise they are installed with apt-get, as root or
# through a sudo that asks for no password; elsewhere the script says what to run and fails.
# fonts-liberation gives the page's text metric-compatible fonts (the screenshots in docs/images).
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
packages=(chromium chromium-driver fonts-liberation)
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "browser: /usr/bin/chromium or /usr/bin/chromedriver is missing; install them as root:" >&2
  echo "  apt-get install -y ${packages[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "browser: no apt-get here: install Chromium and its chromedriver as /usr/bin/chromium and /usr/bin/chromedriver" >&2
  exit 1
fi
echo "browser: installing ${packages[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
/usr/bin/chromium --version >&2
