#!/usr/bin/env bash
# Installs the Debian packages the real node needs, only those missing: iptables (kube-proxy writes its Service
# rules with it), libseccomp-dev and pkg-config (runc is built with seccomp, without which the chart's
# RuntimeDefault profile cannot be applied). Runs `apt-get update` only when something must be installed.
set -euo pipefail
packages=(iptables libseccomp-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
fail() {
  echo "error: the real node needs the Debian packages ${missing[*]}: $1" >&2
  echo "       install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
}
command -v apt-get >/dev/null || fail "apt-get is not available on this machine"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || fail "installing needs root"
  sudo=(sudo)
fi
echo "installing ${missing[*]} (Debian packages the real node needs)" >&2
# Other package installs on the machine hold the dpkg lock for a while; wait for it instead of failing at once.
lock=(-o DPkg::Lock::Timeout=300)
"${sudo[@]}" apt-get "${lock[@]}" update -qq >&2 || fail "apt-get update failed"
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${lock[@]}" install -y -qq --no-install-recommends \
  "${missing[@]}" >&2 || fail "apt-get install failed"
