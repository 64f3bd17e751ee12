#!/usr/bin/env bash
# Debian packages the test suite needs: real PostgreSQL and Redis servers, and what the test
# fleet (systemd-nspawn hosts) needs. Installs only what is missing.
set -euo pipefail

packages=(postgresql redis-server redis-tools debootstrap systemd-container busybox-static
          iproute2 iptables openssh-client)
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
