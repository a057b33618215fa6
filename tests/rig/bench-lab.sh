#!/usr/bin/env bash
# Measures the lab: guest build (cold vs cached), lab up (from nothing vs already up), and the
# T2 smoke test (boot to HTTP, whole test), and rewrites the "Lab" section of docs/benchmarks.md.
# Run as root from the repository: tests/rig/bench-lab.sh [RUNS]   (default 3 smoke runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
rig=tests/rig
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; printf "%.1f" "$(echo "$(date +%s.%N) - $s" | bc)"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

$rig/lab down >/dev/null 2>&1 || true
cache=${FLOTILLA_LAB_CACHE:-/var/tmp/flotilla-lab-cache}
rm -rf "$cache"/guest-*             # keep the downloaded kernel package: the network is not measured
build_cold=$(secs $rig/build-guest.sh)
build_cached=$(secs $rig/build-guest.sh)
up_cold=$(secs $rig/lab up)
up_again=$(secs $rig/lab up)
cargo test -q -p flotilla-tests --no-run >/dev/null 2>&1
boots=(); wholes=()
for _ in $(seq "$runs"); do
  line=$(cargo test -q -p flotilla-tests --test lab_smoke -- --ignored --nocapture 2>&1 | grep '^smoke:')
  boots+=("$(echo "$line" | sed -E 's/.*boot to HTTP ([0-9.]+) s.*/\1/')")
  wholes+=("$(echo "$line" | sed -E 's/.*whole test ([0-9.]+) s.*/\1/')")
done
$rig/lab down >/dev/null 2>&1
boot=$(printf '%s\n' "${boots[@]}" | median)
whole=$(printf '%s\n' "${wholes[@]}" | median)

section=$(cat <<MD
<!-- lab:begin -->
## Lab (tests/rig)

Reproduce: \`sudo tests/rig/bench-lab.sh $runs\` (rewrites this section). Measured $(date -u +%Y-%m-%d)
on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, QEMU under TCG (no KVM).

| what | time | compared with |
|---|---|---|
| guest build (kernel + initramfs + base master), cache empty | ${build_cold} s | cached: ${build_cached} s |
| \`lab up\` from nothing (2 hosts + HAProxy, guest cached) | ${up_cold} s | when already up: ${up_again} s |
| smoke: \`virsh start\` → HTTP answers (median of $runs) | ${boot} s | runs: ${boots[*]} |
| smoke: whole test (uploads, overlay, seed, define, boot, HTTP, cleanup; median) | ${whole} s | runs: ${wholes[*]} |

The kernel package download is cached separately and not measured. \`lab up\` from nothing is
dominated by each libvirtd probing QEMU's capabilities on first start.
<!-- lab:end -->
MD
)
file=docs/benchmarks.md
[ -f $file ] || printf '# Benchmarks\n\nEvery number here comes from a script in the repository; each section names it.\nNo test asserts a time.\n\n<!-- lab:begin -->\n<!-- lab:end -->\n' > $file
python3 - "$file" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- lab:begin -->.*?<!-- lab:end -->", lambda m: section, text, flags=re.S)
open(path, "w").write(text)
PY
echo "wrote the Lab section of $file"
