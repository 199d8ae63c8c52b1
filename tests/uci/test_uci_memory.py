"""Memory of long analysis: `go infinite` under `RamLimitMb`.

A GUI's analysis mode leaves the engine on `go infinite` for hours. The tree is
bounded by `RamLimitMb`; at the bound the search goes on refining the lines it has.
This test runs the engine at a 32 MB bound until the tree reports itself full
(`hashfull` 1000), then for as long again and at least 15 s (an unbounded tree grows
by about 6 MB a second on one core, so it would pass the bound and the slack), and checks that the resident memory
stays below the memory before the search plus the bound plus a stated slack, that
`info` lines keep coming, that `isready` is answered within 50 ms, and that `stop`
gives a legal `bestmove`. It measures memory, not speed.
"""

from __future__ import annotations

import time

import chess

from conftest import parse_info

BOUND_MB = 32
# The evaluation cache (NNCacheSize 20000 entries, about 4 MB), the network's
# buffers for a batch, the allocator's slack and the reader threads.
SLACK_MB = 48
FULL_WITHIN_S = 40.0
AFTER_FULL_S = 15.0


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc status")


def test_go_infinite_stays_within_its_ram_limit(engine):
    engine.send(f"setoption name RamLimitMb value {BOUND_MB}")
    engine.send("setoption name NNCacheSize value 20000")
    engine.send("setoption name Threads value 1")
    engine.send("position startpos")
    # One short search first, so that the network's buffers exist before the baseline.
    engine.go("nodes 64")
    engine.sync()
    base = resident_mb(engine.proc.pid)
    engine.send("go infinite")

    start = time.monotonic()
    full_at = None
    samples = []
    infos_after_full = 0
    while True:
        lines = engine.collect(1.0)
        now = time.monotonic() - start
        samples.append((now, resident_mb(engine.proc.pid)))
        assert not [l for l in lines if l.startswith("bestmove")], "go infinite returned on its own"
        infos = [parse_info(l) for l in lines if l.startswith("info") and "hashfull" in l]
        if full_at is None:
            if any(i.get("hashfull") == 1000 for i in infos):
                full_at = now
            assert now < FULL_WITHIN_S, f"the tree never filled: {samples}"
        else:
            infos_after_full += len(infos)
            if now >= max(2 * full_at, full_at + AFTER_FULL_S):
                break

    sent = time.perf_counter()
    engine.send("isready")
    engine.expect("readyok", 5.0)
    ready_ms = (time.perf_counter() - sent) * 1000
    engine.send("stop")
    best = engine.expect("bestmove", 5.0).split()[1]
    assert chess.Move.from_uci(best) in chess.Board().legal_moves, best

    peak = max(mb for _, mb in samples)
    assert peak < base + BOUND_MB + SLACK_MB, f"base {base:.0f} MB, samples {samples}"
    assert infos_after_full >= int(full_at) // 2, "info lines stopped once the tree was full"
    assert ready_ms < 50, f"isready took {ready_ms:.1f} ms"
    print(f"base {base:.0f} MB, full at {full_at:.0f} s, peak {peak:.0f} MB, isready {ready_ms:.1f} ms")
