#!/usr/bin/env bash
# Builds the lab's tiny guest from Debian packages: a kernel + initramfs for direct kernel boot
# and a small qcow2 "base master" disk (busybox root filesystem with the NoCloud init, the
# httpd "middleware" and a version marker). Cached by content: with nothing changed a rerun
# only prints the paths.
#
#   tests/rig/build-guest.sh [MARKER]     (MARKER defaults to base-v1)
#
# Prints the output directory; it holds vmlinuz, initrd.img and master.qcow2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
marker=${1:-base-v1}
case "$marker" in *[!A-Za-z0-9._-]*|"") echo "bad marker: $marker" >&2; exit 2 ;; esac
cache=${FLOTILLA_LAB_CACHE:-/var/tmp/flotilla-lab-cache}
mkdir -p "$cache/debs"

kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')
bbver=$(dpkg-query -W -f='${Version}' busybox-static)
[ -n "$kpkg" ] && [ -n "$kver" ] || { echo "cannot find the Debian cloud kernel package" >&2; exit 1; }

key=$( { echo "$kpkg $kver $bbver $marker"; cat "$0" "$here"/guest/*; } | sha256sum | cut -c1-16)
out="$cache/guest-$key"
if [ -f "$out/done" ]; then echo "$out"; exit 0; fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
deb=$(ls "$cache/debs/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  (cd "$cache/debs" && apt-get download "$kpkg" >/dev/null 2>&1) || { echo "apt-get download $kpkg failed" >&2; exit 1; }
  deb=$(ls "$cache/debs/${kpkg}_"*.deb | head -n1)
fi
dpkg-deb -x "$deb" "$work/kernel"
release=$(ls "$work/kernel/lib/modules")
moddir="$work/kernel/lib/modules/$release"
depmod -b "$work/kernel" "$release"  # the package leaves modules.dep to its postinst

# initramfs: busybox, the modules (with their dependencies, in load order), /init.
init="$work/initramfs"
mkdir -p "$init/bin" "$init/lib/modules"
cp /bin/busybox "$init/bin/busybox"
cp "$here/guest/initramfs-init" "$init/init"
wanted="virtio_pci virtio_blk virtio_net vfat isofs nls_ascii nls_cp437 nls_utf8 button evdev"
: > "$init/lib/modules/load-order"
add_module() { # $1 = path relative to the module dir, as in modules.dep
  grep -qxF "$1" "$init/lib/modules/load-order" && return 0
  local deps
  deps=$(awk -v m="$1:" '$1 == m { $1 = ""; print }' "$moddir/modules.dep")
  for d in $deps; do add_module "$d"; done
  mkdir -p "$init/lib/modules/$(dirname "$1")"
  cp "$moddir/$1" "$init/lib/modules/$1"
  echo "$1" >> "$init/lib/modules/load-order"
}
for m in $wanted; do
  path=$(awk -F: -v m="$m" '{ n = $1; sub(".*/", "", n); sub("\\.ko.*", "", n); gsub("-", "_", n) } n == m { print $1; exit }' "$moddir/modules.dep")
  if [ -n "$path" ]; then add_module "$path"; fi  # absent = built into the kernel
done
(cd "$init" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.img"
cp "$work/kernel/boot/vmlinuz-$release" "$work/vmlinuz"

# The base master: an ext4 root filesystem labelled "root".
root="$work/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,run,tmp,srv/www,opt/middleware,root}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cp "$here/guest/master-init" "$root/sbin/init"
cp "$here/guest/httpd-start" "$root/opt/middleware/httpd-start"
echo "$marker" > "$root/etc/flotilla-master-version"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
truncate -s 64M "$work/master.raw"
mkfs.ext4 -q -F -L root -d "$root" "$work/master.raw"
qemu-img convert -q -f raw -O qcow2 -o compat=1.1 "$work/master.raw" "$work/master.qcow2"

mkdir -p "$out"
mv "$work/vmlinuz" "$work/initrd.img" "$work/master.qcow2" "$out/"
echo "$release ($kpkg $kver), busybox $bbver, master marker $marker" > "$out/done"
echo "$out"
