#!/usr/bin/env bash
# Install what building and testing p1d needs, from Debian's packages.
# Usage: scripts/deps.sh            (uses sudo when not root)
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libssl-dev libserialport-dev libmosquitto-dev libmicrohttpd-dev libjansson-dev
  libsystemd-dev libinih-dev libsqlite3-dev libcmocka-dev libavahi-client-dev
  clang libclang-rt-14-dev valgrind cppcheck clang-tidy flawfinder binutils gcovr
  libjs-chart.js chromium python3-websocket
  debhelper lintian debootstrap debian-archive-keyring
  socat mosquitto mosquitto-clients openssl sqlite3 curl wrk python3 mandoc tzdata faketime
  dbus avahi-daemon avahi-utils iproute2
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
