#!/usr/bin/env bash
# Image distribution and capture, measured on the lab (run as root, lab up or not):
# - upload of one library version to lab host 1 by `flotillactl image ensure` (libvirt storage
#   stream + sha256 read-back) against `cp` and `qemu-img convert` of the same file into the
#   same pool directory, side by side;
# - `image capture` (forced power-off, download, flatten, sha256) against image size.
# Rewrites the "Images" section of docs/benchmarks.md.   Usage: tests/rig/bench-images.sh [MiB…]
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("${@:-128 512}")
read -r -a sizes <<< "${sizes[*]}"
ctl=target/debug/flotillactl
[ -x $ctl ] || cargo build -q -p flotilla --no-default-features --bin flotillactl
tests/rig/lab up >/dev/null 2>&1
set -a; . /var/tmp/flotilla-lab/lab.env; set +a
data=$(mktemp -d); work=$(mktemp -d)
trap 'rm -rf "$data" "$work"' EXIT
C="$ctl --data-dir $data"
$C host add lab-h1 --uri "$FLOTILLA_LAB_H1_URI" --bridge br0 >/dev/null
pooldir=$FLOTILLA_LAB_DIR/h1/pool
t() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
mibs() { printf "%.0f" "$(echo "$1 / $2" | bc -l)"; }
rows_up=""; rows_cap=""
for mib in "${sizes[@]}"; do
  raw=$work/disk-$mib.raw
  # Incompressible data, with an MBR signature so the import accepts it as a disk.
  head -c $((mib << 20)) /dev/urandom > "$raw"
  printf '\x55\xaa' | dd of="$raw" bs=1 seek=510 conv=notrunc status=none
  $C image import "b$mib" "$raw" >/dev/null
  lib=$data/library/b$mib/v1.qcow2
  sync
  ensure=$(t $C image ensure "b$mib" --host lab-h1)
  again=$(t $C image ensure "b$mib" --host lab-h1)
  cpt=$(t cp "$lib" "$pooldir/bench-cp.qcow2"); rm -f "$pooldir/bench-cp.qcow2"
  conv=$(t qemu-img convert -O qcow2 "$lib" "$pooldir/bench-convert.qcow2"); rm -f "$pooldir/bench-convert.qcow2"
  rows_up+="| $mib MiB | $(printf %.1f "$ensure") s ($(mibs "$mib" "$ensure") MiB/s) | $(printf %.2f "$again") s | $(printf %.1f "$cpt") s ($(mibs "$mib" "$cpt") MiB/s) | $(printf %.1f "$conv") s ($(mibs "$mib" "$conv") MiB/s) |"$'\n'
  # Capture: a builder from this version (it does not boot: random data), powered off.
  $C image build "b$mib" --host lab-h1 --from "b$mib" --memory 64 >/dev/null
  cap=$(t $C image capture "b$mib" --force --timeout 1)
  rows_cap+="| $mib MiB | $(printf %.1f "$cap") s |"$'\n'
  $C image delete "b$mib:2" >/dev/null; $C image delete "b$mib:1" >/dev/null
done
$C host remove lab-h1 >/dev/null

section=$(cat <<MD
<!-- images:begin -->
## Images: distribution and capture

Reproduce: \`sudo tests/rig/bench-images.sh ${sizes[*]}\` (rewrites this section). Measured $(date -u +%Y-%m-%d)
on $(nproc) cores; lab host 1 is on this machine, so the "network" is a unix socket and every
copy lands on the same disk. Images are incompressible random data.

Distribution of one library version into a host's pool:

| image | \`image ensure\` (stream + sha256 read-back) | ensure again (verified copy present) | \`cp\` into the pool | \`qemu-img convert\` into the pool |
|---|---|---|---|---|
${rows_up}
\`image ensure\` does more than the baselines: it reads the whole volume back through libvirt to
compare sha256, so it moves the bytes twice. The second ensure copies nothing. \`cp\` and
\`qemu-img convert\` stay on one filesystem and partly in the page cache (qemu-img may also use
copy offload), so they are the floor here, not what a remote host would see.

Capture (forced power-off, download of the builder disk through libvirt, flatten onto the base,
sha256, record):

| image size | \`image capture\` |
|---|---|
${rows_cap}<!-- images:end -->
MD
)
file=docs/benchmarks.md
grep -q "<!-- images:begin -->" $file || printf '\n<!-- images:begin -->\n<!-- images:end -->\n' >> $file
python3 - "$file" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- images:begin -->.*?<!-- images:end -->", lambda m: section, text, flags=re.S)
open(path, "w").write(text)
PY
echo "wrote the Images section of $file"
