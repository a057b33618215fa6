#!/usr/bin/env bash
# Builds a Debian 12 guest with the real cloud-init (RIG.md), for the compatibility tests (dbus:
# systemd-logind turns ACPI power-button presses into a clean shutdown, as on stock cloud images):
# the seeds Flotilla writes must work there as on the lab's tiny guest. Cached like
# build-guest.sh. Prints the output directory: vmlinuz, initrd.img and master.qcow2 (the root
# file system alone, for direct kernel boot) and disk.qcow2 (a whole BIOS-bootable disk as
# cloud images are: MBR, a FAT boot partition with SYSLINUX, kernel and initrd, then the
# root partition) — built without root or loop devices. ~2 minutes. It runs the QEMU guest
# agent, as many cloud images do: a definition-only rollout updates it without a reboot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${FLOTILLA_LAB_CACHE:-/var/tmp/flotilla-lab-cache}
key=$(cat "$0" | sha256sum | cut -c1-16)
out="$cache/cloud-guest-$key"
if [ -f "$out/done" ]; then echo "$out"; exit 0; fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/cloud-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mmdebstrap --quiet --variant=minbase \
  --include=systemd-sysv,udev,dbus,linux-image-cloud-amd64,initramfs-tools,cloud-init,ifupdown,iproute2,isc-dhcp-client,netbase,python3,qemu-guest-agent \
  --customize-hook='echo "LABEL=root / ext4 defaults 0 1" > "$1/etc/fstab"' \
  --customize-hook='printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90-flotilla.cfg"' \
  bookworm "$root" >&2
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
truncate -s 2G "$work/root.raw"
mkfs.ext4 -q -F -L root -d "$root" "$work/root.raw"
qemu-img convert -q -f raw -O qcow2 -o compat=1.1 "$work/root.raw" "$work/master.qcow2"

# The bootable disk: partition images made apart, then laid out behind an MBR.
boot_mib=128
mkfs.vfat -C -n BOOT "$work/boot.fat" $((boot_mib * 1024)) >/dev/null
printf 'DEFAULT linux\nTIMEOUT 0\nLABEL linux\n  KERNEL /vmlinuz\n  APPEND initrd=/initrd.img root=LABEL=root rw console=ttyS0 net.ifnames=0\n' > "$work/syslinux.cfg"
mcopy -i "$work/boot.fat" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg" ::/
syslinux --install "$work/boot.fat"
root_bytes=$(stat -c %s "$work/root.raw")
disk="$work/disk.raw"
truncate -s $(( (1 + boot_mib) * 1048576 + root_bytes )) "$disk"
printf 'label: dos\nstart=2048, size=%d, type=c, bootable\nstart=%d, type=83\n' \
  $((boot_mib * 2048)) $(( (1 + boot_mib) * 2048 )) | sfdisk -q "$disk"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.fat" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.raw" of="$disk" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
qemu-img convert -q -f raw -O qcow2 -o compat=1.1 "$disk" "$work/disk.qcow2"
mkdir -p "$out"
mv "$work/vmlinuz" "$work/initrd.img" "$work/master.qcow2" "$work/disk.qcow2" "$out/"
echo "debian bookworm minbase + cloud-init" > "$out/done"
echo "$out"
