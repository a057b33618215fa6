#!/usr/bin/env bash
# Installs what is needed, builds Flotilla, starts the lab (two libvirt hosts in network
# namespaces and an HAProxy; tests/rig/lab) and opens the desktop app on the lab's inventory
# (~/.local/share/flotilla-lab) in which the lab's hosts and base master are registered. The lab stays up after the app closes:
# `sudo tests/rig/lab down` removes it. Set FLOTILLA_NO_LAB=1 to skip the lab and use your own
# inventory (~/.local/share/flotilla or $FLOTILLA_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "No display found: run this from a desktop session (or under a virtual one: xvfb-run -a $0)" >&2
  exit 1
fi
scripts/setup.sh
say "Building Flotilla"
npm run build --silent
cargo build -p flotilla --bin flotilla --bin flotillactl
ctl=target/debug/flotillactl

if [ -z "${FLOTILLA_NO_LAB:-}" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  say "Starting the lab"
  $SUDO tests/rig/lab up
  # The lab's own inventory, in the user's data directory (the lab directory belongs to root).
  export FLOTILLA_DATA_DIR=${FLOTILLA_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/flotilla-lab}
  set -a; . "${FLOTILLA_LAB_DIR:-/var/tmp/flotilla-lab}/lab.env"; set +a
  known_hosts=$FLOTILLA_DATA_DIR/ssh/known_hosts
  for i in $(seq "$FLOTILLA_LAB_HOSTS"); do
    # Reached as real hosts are: qemu+ssh through the lab's sshd, its key accepted by the
    # fingerprint the lab wrote (the socket form, FLOTILLA_LAB_H${i}_URI, is for tests).
    uri_var=FLOTILLA_LAB_H${i}_SSH_URI fp_var=FLOTILLA_LAB_H${i}_SSH_FINGERPRINT addr_var=FLOTILLA_LAB_H${i}_SSH_HOST
    # A lab made anew has new host keys: the old lab's key of this address goes (only this
    # lab address's line, as `ssh-keygen -R` removes it), the new one is trusted by its
    # fingerprint below.
    if [ -f "$known_hosts" ] && ! ssh-keygen -lf "$known_hosts" 2>/dev/null | grep -qF "${!fp_var} ${!addr_var} "; then
      ssh-keygen -R "${!addr_var}" -f "$known_hosts" >/dev/null 2>&1 || true
      rm -f "$known_hosts.old"
    fi
    if ! "$ctl" host show "lab-h$i" >/dev/null 2>&1; then
      "$ctl" host add "lab-h$i" --uri "${!uri_var}" --bridge br0 --accept-host-key "${!fp_var}"
    elif "$ctl" host show "lab-h$i" | grep -q '^URI: *qemu+ssh'; then
      "$ctl" host trust-key "lab-h$i" --fingerprint "${!fp_var}" >/dev/null
    fi
    # The lab's segment; TCG, since /dev/kvm does not work in the lab (RIG.md).
    "$ctl" host set "lab-h$i" --network 10.77.0.0/24 --gateway "$FLOTILLA_LAB_GATEWAY" --domain-type qemu >/dev/null
  done
  # The lab's HAProxy: units bind to its backend be_lab.
  if ! "$ctl" lb show lab >/dev/null 2>&1; then
    # A lab started by an older version keeps a root-only socket: say so, and go on.
    "$ctl" lb add lab --haproxy-socket "$FLOTILLA_LAB_HAPROXY_SOCKET" >/dev/null ||
      echo "warning: the lab's HAProxy was not registered; restart the lab (sudo tests/rig/lab down) and run this again" >&2
  fi
  # The lab's base master (the tiny guest, direct kernel boot), so a builder can start at once.
  if ! "$ctl" image show lab-base >/dev/null 2>&1; then
    "$ctl" image import lab-base "$FLOTILLA_LAB_GUEST/master.qcow2" \
      --kernel "$FLOTILLA_LAB_GUEST/vmlinuz" --initrd "$FLOTILLA_LAB_GUEST/initrd.img" \
      --cmdline "console=ttyS0 root=LABEL=root" --notes "the lab's tiny guest (tests/rig)" >/dev/null
  fi
  say "Inventory: $FLOTILLA_DATA_DIR (remove the lab with: sudo tests/rig/lab down)"
fi
say "Starting Flotilla (command line: $ctl --help)"
exec target/debug/flotilla
