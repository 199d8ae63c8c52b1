"""The Ray driver end to end on a local Ray instance: a learner and two workers at tiny
sizes, one worker SIGKILLed in the middle of a shard and restarted by the driver, every
game any worker finished counted by the learner exactly once, and Ctrl-C stopping it all.

Needs the release `trainer` binary (TRAINER_BIN, default target/release/trainer) and Ray
(`pip install ray`); scripts/test provides both."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAINER = Path(os.environ.get("TRAINER_BIN", ROOT / "target" / "release" / "trainer"))

pytest.importorskip("ray")


def worker_pids(worker_id):
    out = subprocess.run(["pgrep", "-f", f"worker-id {worker_id}( |$)"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_driver_restarts_a_killed_worker_and_the_learner_counts_each_game_once(tmp_path):
    assert TRAINER.is_file(), f"build the trainer first: {TRAINER}"
    run = tmp_path / "run"
    learn_args = (
        "--preset quick --filters 8 --blocks 1 --simulations 8 --max-plies 40 --games 4 "
        "--batch-size 32 --publish-steps 4 --gating-games 0 --iterations 1000 "
        "--publish-games 4 --strength-nodes 4 "
        f"--device cpu --seed 5 --models-dir {tmp_path / 'models'}"
    )
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "scale" / "ray_train.py"), "--run-dir", str(run),
         "--trainer", str(TRAINER), "--num-cpus", "3", "--workers", "2",
         "--learn-args", learn_args,
         "--worker-args", f"--games 40 --shard-games 4 --device cpu --scratch {tmp_path / 'scratch'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        shards = run / "shards"
        scratch = tmp_path / "scratch" / "ember-worker-ray0"
        deadline = time.time() + 120
        killed = None
        while killed is None:
            assert time.time() < deadline, "worker ray0 never got to the middle of a shard"
            assert driver.poll() is None, driver.stdout.read()
            if scratch.exists() and any(p.name.endswith(".partial") for p in scratch.iterdir()):
                for pid in worker_pids("ray0"):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
            time.sleep(0.02)

        # Once both workers are done and the learner has taken every shard, Ctrl-C.
        def drained():
            if worker_pids("ray0") or worker_pids("ray1") or not (run / "state.json").exists() \
                    or not shards.exists():
                return False
            complete = [p for p in shards.iterdir() if p.name.endswith(".json")]
            return len(json.loads((run / "state.json").read_text())["worker_shards"]) == len(complete)

        while not drained():
            assert time.time() < deadline + 180, "the workers or the learner never finished"
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)
    assert driver.returncode == 0, out
    assert "worker ray0 died (-9); restarting it (restart 1)" in out, out
    assert "worker ray1 finished" in out and "worker ray0 finished" in out, out
    assert "stopped (1 worker restarts)" in out, out
    learners = subprocess.run(["pgrep", "-f", f"learn --run-dir {run}"], capture_output=True, text=True)
    assert learners.stdout.strip() == "", "Ctrl-C stops the learner"

    state = json.loads((run / "state.json").read_text())
    complete = sorted(p.name[:-5] for p in shards.iterdir() if p.name.endswith(".json"))
    taken = state["worker_shards"]
    assert len(set(taken)) == len(taken), "a shard was taken twice"
    assert sorted(taken) == complete, "every complete shard is taken, nothing else"
    metas = [json.loads((shards / f"{n}.json").read_text()) for n in complete]
    assert state["games_total"] == sum(m["games"] for m in metas)
    # ray1 played its 40 games; ray0 its 40 after the restart, plus those before the kill.
    per_worker = {}
    for m in metas:
        per_worker[m["worker"]] = per_worker.get(m["worker"], 0) + m["games"]
    assert per_worker["ray1"] == 40, per_worker
    assert per_worker["ray0"] >= 40, per_worker
    assert not any(p.name.endswith(".partial") for p in scratch.iterdir()), "the restarted worker cleans up"
    assert not any(p.name.startswith(".") for p in shards.iterdir()), "no unfinished write is left"
