#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers, when missing, at the
# versions in scripts/sysdeps.lock. Debian's archive keeps only the newest build
# of a package, so when a locked version has been superseded (a security update)
# the newest one is installed instead, with a warning naming both: refresh the
# lock then. Chromium is driven by Playwright, never downloaded by it.
set -euo pipefail
cd "$(dirname "$0")"
need=()
while read -r command pin; do
  case "$command" in ''|'#'*) continue ;; esac
  command -v "$command" >/dev/null || need+=("$pin")
done < sysdeps.lock
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pinned=()
for pin in "${need[@]}"; do
  name=${pin%%=*}
  if apt-cache madison "$name" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "${pin#*=}"; then
    pinned+=("$pin")
  else
    echo "warning: $pin is no longer in the archive; installing the newest $name (refresh scripts/sysdeps.lock)" >&2
    pinned+=("$name")
  fi
done
apt-get install -y -qq --no-install-recommends "${pinned[@]}"
