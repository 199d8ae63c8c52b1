#!/usr/bin/env python3
"""A UCI engine that misbehaves on purpose, for the match runner's tests.

Usage: fake_uci.py MODE, where MODE says what it does when asked to move:
  crash      exits with status 3
  hang       never answers
  illegal    answers `bestmove e2e5` (never legal: a pawn cannot go three squares)
  malformed  answers `bestmove ??`
  slow       thinks for two seconds before it answers (`bestmove a2a3`): out of time at 1+0
It answers the handshake (uci, isready) like any engine.
"""
import sys
import time

mode = sys.argv[1] if len(sys.argv) > 1 else "crash"


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


for raw in sys.stdin:
    cmd = raw.strip()
    if cmd == "uci":
        say(f"id name Fake-{mode}")
        say("id author the Ember tests")
        say("uciok")
    elif cmd == "isready":
        say("readyok")
    elif cmd == "quit":
        break
    elif cmd.startswith("go"):
        if mode == "crash":
            sys.exit(3)
        elif mode == "hang":
            time.sleep(3600)
        elif mode == "illegal":
            say("bestmove e2e5")
        elif mode == "malformed":
            say("bestmove ??")
        elif mode == "slow":
            time.sleep(2)
            say("bestmove a2a3")
