#!/usr/bin/env python3
"""Ember against Stockfish on a real clock: counts time forfeits and illegal moves.

The measurement the UCI issue asks for (not part of CI):

    python3 uci/scripts/stockfish_match.py --games 50 --tc 1+0.01
    python3 uci/scripts/stockfish_match.py --games 50 --tc 10+0.1

Both engines play on a clock kept here (python-chess `Limit(white_clock=...)`), the
wall time of each `play` call is charged to the mover, the increment is added after
the move, colours alternate. A clock below zero after an Ember move is a time forfeit;
a move not in `board.legal_moves` (or no move) is an illegal move. Games end by the
rules (with threefold/fifty-move draws claimed) or at --max-plies (scored a draw).
Prints one line per game and a JSON summary as the last line.

`--opponent PATH` replaces Stockfish by another UCI engine (e.g. a second Ember: the
random default network loses to Stockfish in 20-40 moves, while Ember against itself
plays long games that stress the clock handling up to --max-plies).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import chess
import chess.engine

REPO = Path(__file__).resolve().parents[2]


def parse_tc(text: str) -> tuple[float, float]:
    base, _, inc = text.partition("+")
    return float(base), float(inc or 0)


def play_game(ember_path, stockfish_path, ember_white: bool, base: float, inc: float, args) -> dict:
    board = chess.Board()
    clocks = {chess.WHITE: base, chess.BLACK: base}
    ember_color = chess.WHITE if ember_white else chess.BLACK
    result = {"ember_white": ember_white, "forfeit": None, "illegal": None, "plies": 0}
    ember = chess.engine.SimpleEngine.popen_uci([str(ember_path)], timeout=60)
    stockfish = chess.engine.SimpleEngine.popen_uci([str(args.opponent or stockfish_path)], timeout=60)
    try:
        if args.threads:
            ember.configure({"Threads": args.threads})
        if args.opponent is None:
            stockfish.configure({"Skill Level": args.skill, "Threads": 1, "Hash": 16})
        elif args.threads:
            stockfish.configure({"Threads": args.threads})
        game = object()
        while not board.is_game_over(claim_draw=True) and board.ply() < args.max_plies:
            mover = board.turn
            engine = ember if mover == ember_color else stockfish
            limit = chess.engine.Limit(
                white_clock=max(clocks[chess.WHITE], 0.001),
                black_clock=max(clocks[chess.BLACK], 0.001),
                white_inc=inc,
                black_inc=inc,
            )
            start = time.monotonic()
            try:
                played = engine.play(board, limit, game=game)
            except chess.engine.EngineError as exc:
                who = "ember" if engine is ember else "opponent"
                result["illegal"] = f"{who}: {exc}"
                break
            clocks[mover] -= time.monotonic() - start
            move = played.move
            if move is None or move not in board.legal_moves:
                who = "ember" if engine is ember else "opponent"
                result["illegal"] = f"{who}: {move} in {board.fen()}"
                break
            if clocks[mover] < 0:
                who = "ember" if engine is ember else "opponent"
                result["forfeit"] = f"{who} at ply {board.ply()} ({clocks[mover]:.3f}s)"
                break
            clocks[mover] += inc
            board.push(move)
        result["plies"] = board.ply()
        outcome = board.outcome(claim_draw=True)
        if result["forfeit"] or result["illegal"]:
            loser_is_ember = (result["forfeit"] or result["illegal"]).startswith("ember")
            result["score"] = 0.0 if loser_is_ember else 1.0
        elif outcome is None or outcome.winner is None:
            result["score"] = 0.5
        else:
            result["score"] = 1.0 if outcome.winner == ember_color else 0.0
        result["termination"] = outcome.termination.name if outcome else "max_plies"
        result["ember_clock_left"] = round(clocks[ember_color], 3)
    finally:
        for engine in (ember, stockfish):
            try:
                engine.quit()
            except Exception:
                engine.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=50)
    parser.add_argument("--tc", default="1+0.01", help="base+increment in seconds")
    parser.add_argument("--ember", default=os.environ.get("EMBER_BIN", str(REPO / "target/release/ember")))
    parser.add_argument("--stockfish", default=os.environ.get("STOCKFISH_BIN", "/usr/games/stockfish"))
    parser.add_argument("--skill", type=int, default=0, help="Stockfish Skill Level")
    parser.add_argument("--threads", type=int, default=None, help="Ember Threads (default: its own; Stockfish uses 1)")
    parser.add_argument("--max-plies", type=int, default=400)
    parser.add_argument("--opponent", default=None, help="another UCI engine instead of Stockfish")
    args = parser.parse_args()
    base, inc = parse_tc(args.tc)
    totals = {"games": 0, "ember_forfeits": 0, "ember_illegal": 0, "opponent_forfeits": 0, "opponent_illegal": 0,
              "wins": 0, "draws": 0, "losses": 0, "min_ember_clock_left": None}
    started = time.monotonic()
    for i in range(args.games):
        r = play_game(args.ember, args.stockfish, i % 2 == 0, base, inc, args)
        totals["games"] += 1
        for kind in ("forfeit", "illegal"):
            if r[kind]:
                who = r[kind].split(":")[0].split(" ")[0]
                totals[f"{who}_{'forfeits' if kind == 'forfeit' else 'illegal'}"] += 1
        totals["wins" if r["score"] == 1 else "draws" if r["score"] == 0.5 else "losses"] += 1
        left = r["ember_clock_left"]
        if totals["min_ember_clock_left"] is None or left < totals["min_ember_clock_left"]:
            totals["min_ember_clock_left"] = left
        print(f"game {i + 1}/{args.games} ember_{'white' if r['ember_white'] else 'black'} score {r['score']} "
              f"plies {r['plies']} end {r['termination']} forfeit {r['forfeit']} illegal {r['illegal']} "
              f"ember_clock_left {left:.3f}s", flush=True)
    totals["tc"] = args.tc
    totals["opponent"] = args.opponent or f"stockfish skill {args.skill}"
    totals["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(totals), flush=True)
    return 0 if totals["ember_forfeits"] == 0 and totals["ember_illegal"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
