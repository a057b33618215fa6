#!/usr/bin/env bash
# Measures a rolling update and rewrites the "Units: rolling update" section of
# docs/benchmarks.md, side by side in one run, under steady wrk load from the lab's LAN:
#  - Flotilla: `flotillactl unit rollout` of a definition change on a 4-server unit (in place:
#    drain by read-back, shutdown, new payload and instance-id, start, HAProxy's gate);
#  - the reference: 4 × (one server's boot + health rise), from the same rollout's journal;
#  - by hand, one server after the other: HAProxy drain, a fixed sleep, virsh shutdown, start,
#    a fixed sleep, HAProxy ready (what admins script today);
#  - a rollout to a definition that never serves: time from the failed health gate to the
#    start of the rollback, and failed requests during it.
# Run as root from the repository with the lab up: tests/rig/bench-rollout.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
lab_dir=${FLOTILLA_LAB_DIR:-/var/tmp/flotilla-lab}
set -a; . "$lab_dir/lab.env"; set +a
ns=$FLOTILLA_LAB_NETNS
sock=$FLOTILLA_LAB_HAPROXY_SOCKET
pool=$FLOTILLA_LAB_HAPROXY_BACKEND
front="http://$FLOTILLA_LAB_GATEWAY/"
now() { date +%s.%N; }
since() { printf "%.1f" "$(echo "$(now) - $1" | bc)"; }
haproxy_cmd() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall((sys.argv[2]+"\n").encode()); s.shutdown(1); print(s.recv(65536).decode(), end="")' "$sock" "$1"; }
uri() { local v="FLOTILLA_LAB_H${1}_URI"; echo "${!v}"; }

cargo build -q --release -p flotilla --no-default-features --bin flotillactl
ctl() { target/release/flotillactl --data-dir "$data" "$@"; }
data=$(mktemp -d /tmp/flotilla-bench.XXXXXX)
# On any exit: no load left running, nothing of the bench left on the lab.
trap '[ -n "${load_pid:-}" ] && stop_load >/dev/null 2>&1; ctl unit delete bench --yes --force >/dev/null 2>&1 || true; rm -rf "$data"' EXIT

# Steady load: wrk (never retries) in 3 s rounds until stopped; each round's report kept.
start_load() {
  rm -f "$data/load.stop" "$data"/wrk.*
  ( i=0; while [ ! -e "$data/load.stop" ]; do
      ip netns exec "$ns" wrk -t1 -c2 -d3s --timeout 5s "$front" > "$data/wrk.$i" 2>&1 || true
      i=$((i + 1)); done ) &
  load_pid=$!
}
# Prints "requests failed" summed over the rounds since start_load, once the last round
# ended (run it in this shell, not in a subshell: it waits for the load).
stop_load() {
  touch "$data/load.stop"; wait "$load_pid"; load_pid=
  cat "$data"/wrk.* | python3 -c '
import re, sys
req = bad = sock = 0
for line in sys.stdin:
    m = re.search(r"(\d+) requests in", line)
    if m: req += int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", line)
    if m: bad += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", line)
    if m: sock += sum(int(x) for x in m.groups())
print(req, bad + sock)'
}

for i in 1 2; do
  ctl host add "lab-h$i" --uri "$(uri $i)" --bridge br0 >/dev/null
  ctl host set "lab-h$i" --network 10.77.0.0/24 --gateway "$FLOTILLA_LAB_GATEWAY" --domain-type qemu >/dev/null
done
ctl image import tiny "$FLOTILLA_LAB_GUEST/master.qcow2" --kernel "$FLOTILLA_LAB_GUEST/vmlinuz" \
  --initrd "$FLOTILLA_LAB_GUEST/initrd.img" --cmdline "console=ttyS0 root=LABEL=root" >/dev/null
ctl def create web >/dev/null
# The lab's web definition (tests/fixtures/web-definition.toml) whose install hook also writes
# the release mark $1 to /srv/www/release, with the start hook $2.
definition() {
  sed -e "s|^install = \"\(.*\)\"\$|install = \"\1 \&\& echo $1 > /srv/www/release\"|" \
    -e "s|^start = .*|start = \"$2\"|" tests/fixtures/web-definition.toml
}
definition 1 "busybox httpd -p 8080 -h /srv/www" > "$data/d.toml"; ctl def set-file web "$data/d.toml" >/dev/null
ctl lb add lab --haproxy-socket "$sock" >/dev/null
ctl unit create bench --image tiny:1 --definition web --count 4 --name-pattern 'bench-{n}' \
  --addresses 10.77.0.61-10.77.0.64 --memory 128 --lb lab --pool "$pool" \
  --drain-timeout 5 --min-healthy-time 3 >/dev/null
ctl unit deploy bench >/dev/null

# Flotilla: a definition change rolled out under load.
definition 2 "busybox httpd -p 8080 -h /srv/www" > "$data/d.toml"; ctl def set-file web "$data/d.toml" >/dev/null
ctl unit update bench --definition web >/dev/null
start_load
t=$(now)
if ! ctl unit rollout bench --json > "$data/rollout.json"; then cat "$data/rollout.json" >&2; exit 1; fi
flotilla=$(since "$t")
stop_load > "$data/load.out"; read -r f_req f_failed < "$data/load.out"
ctl op list --json > "$data/ops.json"
# Per server from the journal (whole seconds): out of service = lb-drain began → lb-ready
# done; boot + health rise = start began → wait-healthy done.
read -r out_min out_max boot_avg counted < <(python3 - "$data/ops.json" "$data/rollout.json" <<'PY'
import json, sys
from datetime import datetime
ops = json.load(open(sys.argv[1]))["operations"]
report = json.load(open(sys.argv[2]))
op = next(o for o in ops if o["id"] == report["operation"])
t = lambda s: datetime.fromisoformat(s["at"].replace("Z", "+00:00")).timestamp()
out, boot = [], []
for srv in {s["step"].split(": ")[0] for s in op["steps"]}:
    rows = {(s["step"].split(": ")[1], s["status"]): t(s) for s in op["steps"] if s["step"].startswith(srv + ": ")}
    out.append(rows[("lb-ready", "succeeded")] - rows[("lb-drain", "started")])
    boot.append(rows[("wait-healthy", "succeeded")] - rows[("start", "started")])
failed = sum((b["counters"] or {}).get("http_5xx", 0) + (b["counters"] or {}).get("response_errors", 0) for b in report["batches"])
print(int(min(out)), int(max(out)), round(sum(boot) / len(boot), 1), failed)
PY
)
reference=$(printf "%.0f" "$(echo "4 * $boot_avg" | bc)")

# By hand, one server after the other, with fixed sleeps instead of read-back.
start_load
t=$(now)
for n in 1 2 3 4; do
  h=$(( (n - 1) % 2 + 1 )); u=$(uri $h)
  haproxy_cmd "set server $pool/bench-$n state drain" >/dev/null
  sleep 2
  virsh -q -c "$u" shutdown "bench-$n" >/dev/null
  until [ "$(virsh -q -c "$u" domstate "bench-$n")" = "shut off" ]; do sleep 0.2; done
  virsh -q -c "$u" start "bench-$n" >/dev/null
  sleep 8
  haproxy_cmd "set server $pool/bench-$n state ready" >/dev/null
done
byhand=$(since "$t")
stop_load > "$data/load.out"; read -r h_req h_failed < "$data/load.out"
sleep 5

# A definition that never serves: the gate fails, the rollout rolls back.
definition 3 "true" > "$data/d.toml"; ctl def set-file web "$data/d.toml" >/dev/null
ctl unit update bench --definition web >/dev/null
start_load
t=$(now); ctl unit rollout bench --health-timeout 20 --json > "$data/rollback.json" 2>/dev/null || true; rollback_total=$(since "$t")
stop_load > "$data/load.out"; read -r r_req r_failed < "$data/load.out"
ctl op list --json > "$data/ops.json"
to_undo=$(python3 - "$data/ops.json" <<'PY'
import json, sys
from datetime import datetime
op = next(o for o in json.load(open(sys.argv[1]))["operations"] if o["kind"] == "rollout")
t = lambda s: datetime.fromisoformat(s["at"].replace("Z", "+00:00")).timestamp()
failed = min(t(s) for s in op["steps"] if s["status"] == "failed")
undo = min(t(s) for s in op["steps"] if s["status"] == "undo_started")
print(int(undo - failed))
PY
)
ctl unit delete bench --yes >/dev/null

section=$(cat <<MD
<!-- rollout:begin -->
## Units: rolling update

Reproduce: \`sudo tests/rig/bench-rollout.sh\` with the lab up (rewrites this section). Measured
$(date -u +%Y-%m-%d) on $(nproc) cores, QEMU under TCG; release build. One run of each, side
by side, each under steady \`wrk\` load (2 connections, no retries) through the lab's HAProxy
(\`retries 3\`, \`option redispatch\`, HTTP check).

A definition change on 4 servers of the lab's tiny guest (in place: same disk, new payload and
instance-id, reboot), \`max_unavailable\` 1, drain timeout 5 s, \`min_healthy_time\` 3 s:

| how | total | out of service per server | requests | failed |
|---|---|---|---|---|
| Flotilla: \`flotillactl unit rollout\` | ${flotilla} s | ${out_min}–${out_max} s (journal, whole seconds) | ${f_req} | **${f_failed}** (HAProxy counted ${counted}) |
| reference: 4 × (one server's boot + health rise, ${boot_avg} s) | ${reference} s | | | |
| by hand: drain, sleep 2 s, shutdown, start, sleep 8 s, ready — per server | ${byhand} s | about 10 s + shutdown | ${h_req} | **${h_failed}** |

Flotilla's rollout costs the reference plus, per server, the drain (read back from HAProxy,
usually at once under this load), the shutdown and the 3 s gate. The by-hand script took
about as long and, on this backend, failed no request either: the lab's HAProxy checks over
HTTP, retries and redispatches ([haproxy.md](haproxy.md)), so a server set \`ready\` before it
serves stays out of rotation until its check passes, and wrk's requests are short enough to
end within the 2 s drain sleep. The script is safe here because of those backend settings and
because its sleeps fit this guest; it does not read the drain back, has no gate of its own and
does not roll back (with a start hook that never serves it leaves the server down and goes
on to the next).

A definition whose start hook never serves (\`--health-timeout 20\`): the first server fails
its gate, the rollout rolls back. From the failed gate to the start of the rollback:
**${to_undo} s** (journal, whole seconds); whole rollout including the 20 s timeout and the
rollback: ${rollback_total} s; ${r_req} requests, **${r_failed}** failed.
<!-- rollout:end -->
MD
)
file=docs/benchmarks.md
grep -q '<!-- rollout:begin -->' $file || printf '\n<!-- rollout:begin -->\n<!-- rollout:end -->\n' >> $file
python3 - "$file" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- rollout:begin -->.*?<!-- rollout:end -->", lambda m: section, text, flags=re.S)
open(path, "w").write(text)
PY
echo "wrote the rolling-update section of $file"
