#!/usr/bin/env bash
# Image distribution over SSH, measured on the lab (run as root): `flotillactl image ensure` of
# one library version (libvirt storage stream + sha256 read-back) to lab host 1 through
# qemu+ssh (the lab's sshd, virt-ssh-helper), to lab host 2 through its local socket
# (qemu+unix), and `scp` of the same file to host 1 through the same sshd, side by side.
# Rewrites the "Images over SSH" section of docs/benchmarks.md.
#   Usage: tests/rig/bench-ssh.sh [MiB [runs]]      (default 512 MiB, 2 runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-512}; runs=${2:-2}
ctl=target/debug/flotillactl
[ -x $ctl ] || cargo build -q -p flotilla --no-default-features --bin flotillactl
tests/rig/lab up >/dev/null 2>&1
set -a; . /var/tmp/flotilla-lab/lab.env; set +a
data=$(mktemp -d); work=$(mktemp -d); remote=/tmp/ssh-bench-scp.$$
trap 'rm -rf "$data" "$work" "$remote"' EXIT
C="$ctl --data-dir $data"
$C host add ssh-bench-h1 --uri "$FLOTILLA_LAB_H1_SSH_URI" --bridge br0 --accept-host-key "$FLOTILLA_LAB_H1_SSH_FINGERPRINT" >/dev/null
$C host add ssh-bench-h2 --uri "$FLOTILLA_LAB_H2_URI" --bridge br0 >/dev/null
t() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
cell() { printf "%.1f s (%.0f MiB/s)" "$1" "$(echo "$mib / $1" | bc -l)"; }
raw=$work/disk.raw
# Incompressible data, with an MBR signature so the import accepts it as a disk.
head -c $((mib << 20)) /dev/urandom > "$raw"
printf '\x55\xaa' | dd of="$raw" bs=1 seek=510 conv=notrunc status=none
rows=""
for r in $(seq "$runs"); do
  $C image import "ssh-bench-$r" "$raw" >/dev/null
  lib=$data/library/ssh-bench-$r/v1.qcow2
  sync
  over_ssh=$(t $C image ensure "ssh-bench-$r" --host ssh-bench-h1)
  over_sock=$(t $C image ensure "ssh-bench-$r" --host ssh-bench-h2)
  scp_t=$(t scp -q -i "$FLOTILLA_LAB_SSH_KEY" -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o UserKnownHostsFile="$data/ssh/known_hosts" "$lib" "$FLOTILLA_LAB_SSH_USER@$FLOTILLA_LAB_H1_SSH_HOST:$remote")
  rm -f "$remote"
  rows+="| $r | $(cell "$over_ssh") | $(cell "$over_sock") | $(cell "$scp_t") |"$'\n'
  $C image delete "ssh-bench-$r:1" >/dev/null
done
$C host remove ssh-bench-h1 >/dev/null; $C host remove ssh-bench-h2 >/dev/null

section=$(cat <<MD
<!-- ssh:begin -->
## Images over SSH

Reproduce: \`sudo tests/rig/bench-ssh.sh $mib $runs\` (rewrites this section). Measured $(date -u +%Y-%m-%d) on
$(nproc) cores. One $mib MiB library version (incompressible random data, qcow2) per run, put
into a lab host's pool by \`flotillactl image ensure\` — a libvirt storage stream, then the whole
volume read back through libvirt for its sha256 — through \`qemu+ssh://\` (the lab's sshd in the
host's namespace, OpenSSH $(ssh -V 2>&1 | sed -E 's/OpenSSH_([^ ,]*).*/\1/'), \`virt-ssh-helper\` on the far side) and through the host's local
socket (\`qemu+unix://\`); and \`scp\` of the same file through the same sshd, as the baseline of
what SSH itself moves. Host and "network" are this machine (a veth pair), so these are CPU-bound
(encryption on both ends of SSH, sha256); the machine is shared, so expect some noise between runs.

| run | \`image ensure\` over SSH | \`image ensure\` over the local socket | \`scp\` of the file |
|---|---|---|---|
${rows}
\`image ensure\` moves the bytes twice (upload, then the read-back), \`scp\` once: over SSH both
directions are encrypted.
<!-- ssh:end -->
MD
)
file=docs/benchmarks.md
grep -q "<!-- ssh:begin -->" $file || printf '\n<!-- ssh:begin -->\n<!-- ssh:end -->\n' >> $file
python3 - "$file" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- ssh:begin -->.*?<!-- ssh:end -->", lambda m: section, text, flags=re.S)
open(path, "w").write(text)
PY
echo "wrote the Images over SSH section of $file"
