"""Distributed training of Ember on a Ray cluster: one learner and N self-play workers.

Each is a Ray actor with its own CPU and GPU resources that runs Ember's `trainer`
binary (`trainer learn` or `trainer worker`) as a child process. They meet only in the
run folder (shared storage every node mounts at the same path); Ray places them, and this
driver restarts a worker whose process dies and stops everything on Ctrl-C or SIGTERM.

    python3 scale/ray_train.py --run-dir /mnt/ember/run1 --workers 8 \\
        --worker-gpus 1 --learner-gpus 1 --trainer target/cuda/release/trainer \\
        --learn-args "--preset production --device cuda" --worker-args "--device cuda"

Local, without a cluster: `--num-cpus N` starts a Ray instance on this machine
(`ray.init(num_cpus=N)`); `--address auto` joins a cluster started with `ray start`.
See docs/distributed.md.
"""

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time

import ray


@ray.remote(max_restarts=0)
class Process:
    """One `trainer` child process, run where Ray placed this actor."""

    def __init__(self, argv, log_path):
        self.log = open(log_path, "ab")
        self.child = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def pid(self):
        return self.child.pid

    def poll(self):
        return self.child.poll()

    def stop(self, grace_s):
        """SIGTERM, then SIGKILL after `grace_s` seconds; the exit code."""
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.child.kill()
        return self.child.wait()


def log(msg):
    print(f"[ray_train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="run folder on storage every node shares")
    p.add_argument("--trainer", default="target/release/trainer", help="the trainer binary (same path on every node)")
    p.add_argument("--workers", type=int, default=2, help="self-play workers")
    p.add_argument("--worker-cpus", type=float, default=1, help="CPUs per worker (also its --threads)")
    p.add_argument("--worker-gpus", type=float, default=0)
    p.add_argument("--learner-cpus", type=float, default=1)
    p.add_argument("--learner-gpus", type=float, default=0)
    p.add_argument("--learn-args", default="", help="extra flags of `trainer learn`, one string")
    p.add_argument("--worker-args", default="", help="extra flags of `trainer worker`, one string")
    p.add_argument("--address", default=None, help="a Ray cluster to join (`auto`: the one `ray start` made)")
    p.add_argument("--num-cpus", type=int, default=None, help="start a local Ray instance with this many CPUs")
    p.add_argument("--logs", default=None, help="folder for the processes' logs (default RUN_DIR/logs)")
    p.add_argument("--max-restarts", type=int, default=100, help="worker restarts before the driver gives up")
    p.add_argument("--grace", type=float, default=10, help="seconds a stopped process gets before SIGKILL")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    trainer = os.path.abspath(args.trainer)
    logs = os.path.abspath(args.logs or os.path.join(run_dir, "logs"))
    os.makedirs(logs, exist_ok=True)
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)

    def start_learner():
        argv = [trainer, "learn", "--run-dir", run_dir, *shlex.split(args.learn_args)]
        return Process.options(num_cpus=args.learner_cpus, num_gpus=args.learner_gpus).remote(
            argv, os.path.join(logs, "learner.log"))

    def start_worker(i):
        wid = f"ray{i}"
        threads = str(max(1, round(args.worker_cpus)))
        argv = [trainer, "worker", "--run-dir", run_dir, "--worker-id", wid, "--threads", threads,
                *shlex.split(args.worker_args)]
        return Process.options(num_cpus=args.worker_cpus, num_gpus=args.worker_gpus).remote(
            argv, os.path.join(logs, f"worker-{wid}.log"))

    stopping = {"now": False}

    def on_signal(signum, _frame):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    learner = start_learner()
    workers = {i: start_worker(i) for i in range(args.workers)}
    finished = set()
    restarts = 0
    log(f"learner and {args.workers} workers started on {run_dir}; logs in {logs}")
    code = 0
    try:
        while not stopping["now"]:
            time.sleep(1)
            try:
                learner_exit = ray.get(learner.poll.remote())
            except ray.exceptions.RayActorError:
                learner_exit = -1
            if learner_exit is not None:
                log(f"the learner exited with {learner_exit}; stopping the workers")
                code = 0 if learner_exit == 0 else 1
                break
            for i, actor in list(workers.items()):
                if i in finished:
                    continue
                try:
                    status = ray.get(actor.poll.remote())
                except ray.exceptions.RayActorError:
                    status = "actor lost"
                if status is None:
                    continue
                if status == 0:
                    log(f"worker ray{i} finished")
                    finished.add(i)
                    continue
                if restarts >= args.max_restarts:
                    log(f"worker ray{i} died ({status}) and {restarts} restarts are used up; stopping")
                    code = 1
                    stopping["now"] = True
                    break
                restarts += 1
                log(f"worker ray{i} died ({status}); restarting it (restart {restarts})")
                workers[i] = start_worker(i)
    finally:
        for i, actor in workers.items():
            try:
                ray.get(actor.stop.remote(args.grace))
            except ray.exceptions.RayActorError:
                pass
        try:
            ray.get(learner.stop.remote(args.grace))
        except ray.exceptions.RayActorError:
            pass
        log(f"stopped ({restarts} worker restarts)")
        ray.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
