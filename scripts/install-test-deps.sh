#!/usr/bin/env bash
# Debian packages the test suite needs: real PostgreSQL and Redis servers, what the test
# fleet (systemd-nspawn hosts) needs, and squid: the package proxy the suite starts on the
# fleet's bridge so bare hosts (no route out) can install from Debian's mirror.
# Installs only what is missing; nothing is started here (the suite starts what it needs).
set -euo pipefail

packages=(postgresql redis-server redis-tools debootstrap systemd-container busybox-static
          iproute2 iptables openssh-client squid
          caddy pdns-server pdns-backend-sqlite3 dnsutils pebble)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages (need root to install): ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
