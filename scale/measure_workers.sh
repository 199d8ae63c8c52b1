#!/usr/bin/env bash
# Positions/s of 1, 2 and 4 `trainer worker` processes sharing one run folder (the
# development preset's self-play: 64x3, 32 simulations, playout cap 8, 120-ply cap), 48
# games in all each time. THREADS=N gives each worker N threads (default: all cores).
#
#   [THREADS=1] scale/measure_workers.sh
set -euo pipefail
T=${T:-target/release/trainer}
root=$(mktemp -d)
$T learn --run-dir $root/run --preset development --publish-steps 1000000 --idle-exit 900 \
  --device cpu --seed 1 --models-dir $root/models > $root/learn.log 2>&1 &
learner=$!
while [ ! -f $root/run/published.json ]; do sleep 0.2; done
for k in 1 2 4; do
  games=$((48 / k))
  start=$(date +%s.%N)
  pids=()
  for i in $(seq 1 $k); do
    $T worker --run-dir $root/run --worker-id k${k}w$i ${THREADS:+--threads $THREADS} --games $games --shard-games $games --device cpu > $root/w$k-$i.log 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  pos=$(cat $root/run/shards/k${k}w*.json | python3 -c 'import sys,json; print(sum(json.loads(l)["positions"] for l in sys.stdin.read().replace("}\n{","}\x00{").split("\x00")))')
  python3 -c "print('workers $k: $pos positions in %.1f s = %.0f positions/s' % ($end-$start, $pos/($end-$start)))"
done
kill $learner; rm -rf "$root"
