#!/usr/bin/env bash
# Debian's chromium + chromium-driver for tests/test_browser_jupyterlab.py (selenium drives them; no browser is
# downloaded from anywhere else). Idempotent; prints one line on what it did; always exits 0: where it cannot
# install (not root, no apt-get, no package), the browser test skips with the reason.
set -u
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
PACKAGES="chromium chromium-driver"
APT="apt-get -q -o DPkg::Lock::Timeout=300"  # wait for another apt/dpkg run instead of failing at once

if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
  echo "browser: chromium and chromedriver already installed ($CHROMIUM, $CHROMEDRIVER)"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: chromium/chromedriver missing and cannot install here (needs root and apt-get:" \
       "'sudo apt-get install chromium chromium-driver'); the browser test will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if $APT install -y $PACKAGES >/dev/null 2>&1 \
   || { $APT update >/dev/null 2>&1 && $APT install -y $PACKAGES >/dev/null 2>&1; }; then
  if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    echo "browser: installed $PACKAGES with apt-get ($("$CHROMEDRIVER" --version 2>/dev/null | cut -d' ' -f1-2))"
    exit 0
  fi
fi
echo "browser: could not install $PACKAGES with apt-get; the browser test will skip"
exit 0
