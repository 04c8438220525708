#!/usr/bin/env bash
# Runs the README's cluster commands ("On a cluster with M machines") on this machine's loopback: a head and one
# more node (each `ray start` with its own HOME, as two machines would have), the token handed over the way the
# README says, then a scaled-down `lm-gym train --backend rllib` from a third HOME that holds only RAY_AUTH_TOKEN.
# The head gets no CPUs, so every env runner must land on the other node; summary.json must say so.
#
#   scripts/check_cluster_commands.sh            (CI runs it; it stops the Ray processes it started)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(dirname "$(command -v "${PYTHON:-python3}")")
PORT=${PORT:-6380}
HEAD_IP=127.0.0.1
work=$(mktemp -d)
mkdir -p "$work/head" "$work/node" "$work/driver"
stop() { HOME="$work/node" "$BIN/ray" stop --force >/dev/null 2>&1 || true; rm -rf "$work"; }
trap stop EXIT

# On the head machine: a token, then the head with token authentication on:
token=$(HOME="$work/head" "$BIN/ray" get-auth-token --generate)
HOME="$work/head" RAY_AUTH_MODE=token "$BIN/ray" start --head --port=$PORT --node-ip-address=$HEAD_IP --num-cpus=0 \
    --include-dashboard=false --disable-usage-stats
# On each other machine, with the head's token:
HOME="$work/node" RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$token" \
    "$BIN/ray" start --address=$HEAD_IP:$PORT --node-ip-address=$HEAD_IP --num-cpus=2 --disable-usage-stats
# The run, from a machine that has the token (lm-gym turns RAY_AUTH_MODE=token on by itself when it sees one):
HOME="$work/driver" RAY_AUTH_TOKEN="$token" OMP_NUM_THREADS=1 "$BIN/lm-gym" train --backend rllib \
    --reward target_word --max-new-tokens 4 --steps 1024 --n-steps 32 --num-env-runners 2 --eval-samples 1 \
    --checkpoint-every 0 --ray-address $HEAD_IP:$PORT --out "$work/runs"

"$BIN/python" - "$work/runs" <<'EOF'
import json, sys
from pathlib import Path

(run,) = Path(sys.argv[1]).iterdir()
cluster = json.loads((run / "summary.json").read_text())["cluster"]
head = next(n for n in cluster["nodes"] if n["cpus"] == 0)
assert len(cluster["nodes"]) == 2, cluster["nodes"]
assert len(cluster["env_runners"]) == 2 and all(r["node_id"] != head["node_id"] for r in cluster["env_runners"])
assert (run / "lm" / "config.json").exists()
print(f"cluster commands: OK (2 nodes; both env runners on the non-head node; {run.name} trained and exported)")
EOF
