#!/usr/bin/env bash
# Installs everything Flotilla needs on Debian 12, given Rust (cargo) and Node.js (>= 20):
# system packages (libvirt, QEMU, HAProxy, WebKitGTK, Xvfb, …), the npm packages, tauri-driver.
# Idempotent: a second run only checks and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "Rust is not installed (cargo not found); install it with rustup first"
command -v node >/dev/null || die "Node.js is not installed; install Node.js 20 or newer first"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js $node_major is too old; Flotilla's front end needs 20 or newer"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root, or install sudo: system packages must be installed"
  SUDO=sudo
fi

# Build tools and libraries for the app, plus the lab's parts (libvirt daemon, QEMU, HAProxy,
# guest kernel tools), the GUI test stack (Xvfb, WebKitWebDriver) and virt-viewer (a builder's
# console, opened from the Images view). For the BMC tests: openssl (self-signed BMC
# certificates), python3-venv and python3-libvirt (sushy-tools below), dbus and gnome-keyring
# (a real Secret Service for the password store's test; libsecret-tools to look into it).
packages=(
  pkg-config build-essential file
  libvirt-dev libvirt-daemon-system libvirt-clients
  qemu-system-x86 qemu-utils
  openssh-client openssh-server
  haproxy caddy busybox-static cpio syslinux syslinux-common mtools dosfstools fdisk wrk kmod e2fsprogs curl bc mmdebstrap iproute2 util-linux ovmf
  libwebkit2gtk-4.1-dev librsvg2-dev libayatana-appindicator3-dev libssl-dev libxdo-dev
  xvfb xauth webkit2gtk-driver
  virt-viewer
  openssl python3-venv python3-libvirt dbus gnome-keyring libsecret-tools
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "Installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # Some images carry qemu-utils from backports, which conflicts with Debian 12's
  # qemu-system-x86: take both at the version qemu-system-x86 comes in.
  qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  args=()
  for p in "${missing[@]}"; do
    case "$p" in
      qemu-utils|qemu-system-x86) args+=("$p=$qemu_version") ;;
      *) args+=("$p") ;;
    esac
  done
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]] && [[ " ${missing[*]} " != *" qemu-utils "* ]]; then
    args+=("qemu-utils=$qemu_version")
  fi
  # The lab runs its own sshd per lab host (tests/rig/lab); installing openssh-server must not
  # leave a system-wide sshd listening. Debian's ssh.service and /etc/init.d/ssh start nothing
  # while /etc/ssh/sshd_not_to_be_run exists: made here only when openssh-server was not
  # installed before (an admin's own sshd is left alone). `sudo rm /etc/ssh/sshd_not_to_be_run`
  # enables the system sshd again.
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && [ ! -e /etc/ssh/sshd_config ]; then
    $SUDO mkdir -p /etc/ssh
    $SUDO touch /etc/ssh/sshd_not_to_be_run
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${args[@]}" >/dev/null
  # Debian's caddy package starts a web server on port 80; Flotilla's tests run their own.
  if [[ " ${missing[*]} " == *" caddy "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now caddy >/dev/null 2>&1 || true
  fi
fi

stamp=node_modules/.flotilla-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "Installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

if ! command -v tauri-driver >/dev/null && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
  say "Installing tauri-driver (GUI test driver)"
  cargo install tauri-driver --locked --version '^2' --quiet
fi

# A third-party Redfish BMC for the BMC client's tests (tests/tests/redfish_sushy.rs): the
# OpenStack emulator sushy-tools with its libvirt driver (Debian's python3-libvirt, hence
# --system-site-packages), in a virtual environment outside the repository.
SUSHY_VERSION=2.2.0
sushy_venv=${FLOTILLA_SUSHY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla/sushy-tools-$SUSHY_VERSION}
if [ ! -x "$sushy_venv/bin/sushy-emulator" ]; then
  say "Installing sushy-tools $SUSHY_VERSION (Redfish emulator for the tests) in $sushy_venv"
  rm -rf "$sushy_venv"
  /usr/bin/python3 -m venv --system-site-packages "$sushy_venv"
  "$sushy_venv/bin/pip" install --quiet --disable-pip-version-check "sushy-tools==$SUSHY_VERSION"
fi
