#!/usr/bin/env python3
"""Play Ember against Stockfish (Skill Level 0) on real clocks and count failures.

A measurement, not part of CI. Example:

    python3 scripts/stockfish_match.py --games 50 --tc 1+0.01
    python3 scripts/stockfish_match.py --games 50 --tc 10+0.1 --pgn /tmp/ember-sf.pgn

Colours alternate (Ember has White in even-numbered games). The clocks are kept
here: each side starts with the base time; the wall time of each `play` call
(engine thinking plus all communication overhead) is subtracted from the
mover's clock, then the increment is added. Both clocks and increments are
passed to both engines via `Limit(white_clock, black_clock, white_inc,
black_inc)`. A clock below zero after a move is a loss on time for that side;
an illegal move (python-chess rejects it with an EngineError), no move in a
position that has legal moves, or a crash is a loss for that side. Games end
by the rules (threefold repetition and the fifty-move rule are claimed) or are
adjudicated drawn at --max-plies.

Prints one line per game and, last, one JSON line with the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import chess
import chess.engine
import chess.pgn

REPO_ROOT = Path(__file__).resolve().parents[1]
WATCHDOG_GRACE = 5.0


def parse_tc(text: str) -> tuple:
    base, plus, inc = text.partition("+")
    try:
        base_s = float(base)
        inc_s = float(inc) if plus else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"time control must look like 10+0.1, got {text!r}") from None
    if base_s <= 0 or inc_s < 0:
        raise argparse.ArgumentTypeError(f"time control needs base > 0 and increment >= 0, got {text!r}")
    return base_s, inc_s


def parse_option(text: str) -> tuple:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"engine option must look like NAME=VALUE, got {text!r}")
    return name.strip(), value


def default_ember() -> str:
    if os.environ.get("EMBER_BIN"):
        return os.environ["EMBER_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
    return str(target / "release" / "ember")


class Player:
    """One engine process, restarted after it crashes or is killed."""

    def __init__(self, name: str, path: str, options: dict) -> None:
        self.name = name
        self.path = path
        self.options = options
        self.engine: Optional[chess.engine.SimpleEngine] = None

    def start(self) -> chess.engine.SimpleEngine:
        if self.engine is None:
            engine = chess.engine.SimpleEngine.popen_uci([self.path], timeout=60.0)
            try:
                if self.options:
                    engine.configure(self.options)
            except BaseException:
                engine.close()
                raise
            self.engine = engine
        return self.engine

    def discard(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def quit(self) -> None:
        if self.engine is not None:
            try:
                self.engine.quit()
            except (chess.engine.EngineError, TimeoutError, RuntimeError):
                self.engine.close()
            self.engine = None


class MoveFailure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "time", "illegal" or "crash"
        self.detail = detail


def timed_move(player: Player, board: chess.Board, limit: chess.engine.Limit, game: object, budget: float) -> tuple:
    """(move, elapsed seconds); raises MoveFailure on no/illegal move or a crash.

    An engine that has not answered `budget + WATCHDOG_GRACE` seconds after the
    `go` has certainly lost on time; it is killed and reported as such.
    """
    engine = player.start()
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        engine.close()

    timer = threading.Timer(budget + WATCHDOG_GRACE, kill)
    timer.daemon = True
    start = time.monotonic()
    timer.start()
    try:
        played = engine.play(board, limit, game=game)
    except chess.engine.EngineTerminatedError as exc:
        player.discard()
        if fired.is_set():
            raise MoveFailure("time", f"no move within {budget + WATCHDOG_GRACE:.1f}s, engine killed") from None
        raise MoveFailure("crash", f"engine terminated: {exc}") from None
    except chess.engine.EngineError as exc:
        raise MoveFailure("illegal", f"illegal move: {exc}") from None
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    if played.move is None:
        return None, elapsed
    if played.move not in board.legal_moves:
        raise MoveFailure("illegal", f"illegal move {played.move.uci()}")
    return played.move, elapsed


def play_game(index: int, ember: Player, stockfish: Player, base: float, inc: float, max_plies: int) -> dict:
    ember_color = chess.WHITE if index % 2 == 0 else chess.BLACK
    players = {ember_color: ember, not ember_color: stockfish}
    board = chess.Board()
    clocks = {chess.WHITE: base, chess.BLACK: base}
    game = object()
    result = {
        "ember_color": "white" if ember_color == chess.WHITE else "black",
        "result": "*",
        "termination": "",
        "loser": None,
        "failure": None,
        "detail": "",
    }

    def lose(color: chess.Color, failure: Optional[str], termination: str, detail: str = "") -> None:
        result["result"] = "0-1" if color == chess.WHITE else "1-0"
        result["loser"] = "ember" if color == ember_color else "stockfish"
        result["failure"] = failure
        result["termination"] = termination
        result["detail"] = detail

    while True:
        outcome = board.outcome(claim_draw=True)
        if outcome is not None:
            result["result"] = outcome.result()
            result["termination"] = outcome.termination.name.lower()
            if outcome.winner is not None:
                result["loser"] = "ember" if outcome.winner != ember_color else "stockfish"
            break
        if board.ply() >= max_plies:
            result["result"] = "1/2-1/2"
            result["termination"] = f"adjudicated draw at {max_plies} plies"
            break
        mover = board.turn
        limit = chess.engine.Limit(
            white_clock=max(clocks[chess.WHITE], 0.001),
            black_clock=max(clocks[chess.BLACK], 0.001),
            white_inc=inc,
            black_inc=inc,
        )
        try:
            move, elapsed = timed_move(players[mover], board, limit, game, clocks[mover])
        except MoveFailure as failure:
            termination = "time forfeit" if failure.kind == "time" else failure.kind
            lose(mover, failure.kind, termination, failure.detail)
            break
        clocks[mover] -= elapsed
        if clocks[mover] < 0:
            lose(mover, "time", "time forfeit", f"clock {clocks[mover]:.3f}s after {elapsed:.3f}s")
            break
        if move is None:
            lose(mover, "illegal", "illegal", "no move in a position with legal moves")
            break
        clocks[mover] += inc
        board.push(move)

    result["board"] = board
    result["plies"] = board.ply()
    result["clocks"] = (clocks[chess.WHITE], clocks[chess.BLACK])
    return result


def save_pgn(path: str, index: int, result: dict, tc: str) -> None:
    pgn = chess.pgn.Game.from_board(result["board"])
    ember_white = result["ember_color"] == "white"
    pgn.headers["Event"] = "Ember vs Stockfish"
    pgn.headers["Round"] = str(index + 1)
    pgn.headers["White"] = "Ember" if ember_white else "Stockfish"
    pgn.headers["Black"] = "Stockfish" if ember_white else "Ember"
    pgn.headers["Result"] = result["result"]
    pgn.headers["TimeControl"] = tc
    pgn.headers["Termination"] = result["termination"] + (f" ({result['detail']})" if result["detail"] else "")
    with open(path, "a", encoding="utf-8") as handle:
        print(pgn, file=handle, end="\n\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=50, help="number of games (default 50)")
    parser.add_argument("--tc", default="10+0.1", help="time control base+increment in seconds (default 10+0.1)")
    parser.add_argument("--ember", default=default_ember(), help="Ember binary (default $EMBER_BIN or target/release/ember)")
    parser.add_argument(
        "--stockfish",
        default=os.environ.get("STOCKFISH_BIN") or "/usr/games/stockfish",
        help="Stockfish binary (default $STOCKFISH_BIN or /usr/games/stockfish)",
    )
    parser.add_argument(
        "--ember-option",
        action="append",
        type=parse_option,
        default=[],
        metavar="NAME=VALUE",
        help="UCI option for Ember (repeatable)",
    )
    parser.add_argument("--skill", type=int, default=0, help="Stockfish Skill Level (default 0)")
    parser.add_argument("--max-plies", type=int, default=300, help="adjudicate a draw after this many plies (default 300)")
    parser.add_argument("--pgn", help="append the games to this PGN file")
    args = parser.parse_args(argv)
    try:
        base, inc = parse_tc(args.tc)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))

    for label, path in (("Ember", args.ember), ("Stockfish", args.stockfish)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            parser.error(f"{label} binary not found or not executable: {path}")

    ember = Player("Ember", args.ember, dict(args.ember_option))
    stockfish = Player("Stockfish", args.stockfish, {"Skill Level": args.skill, "Threads": 1, "Hash": 16})
    for player in (ember, stockfish):
        try:
            player.start()
        except (chess.engine.EngineError, OSError, TimeoutError) as exc:
            ember.quit()
            stockfish.quit()
            parser.error(f"could not start {player.name} with options {player.options}: {exc}")
    totals = {
        "tc": args.tc,
        "games": 0,
        "ember_wins": 0,
        "draws": 0,
        "ember_losses": 0,
        "ember_time_forfeits": 0,
        "ember_illegal_moves": 0,
        "stockfish_time_forfeits": 0,
        "ember_crashes": 0,
        "stockfish_illegal_moves": 0,
    }
    try:
        for index in range(args.games):
            result = play_game(index, ember, stockfish, base, inc, args.max_plies)
            totals["games"] += 1
            if result["result"] == "1/2-1/2":
                totals["draws"] += 1
            elif result["loser"] == "ember":
                totals["ember_losses"] += 1
            elif result["loser"] == "stockfish":
                totals["ember_wins"] += 1
            failure, loser = result["failure"], result["loser"]
            if failure == "time":
                totals[f"{loser}_time_forfeits"] += 1
            elif failure == "illegal":
                totals[f"{loser}_illegal_moves"] += 1
            elif failure == "crash" and loser == "ember":
                totals["ember_crashes"] += 1
            white_clock, black_clock = result["clocks"]
            print(
                f"game {index + 1}/{args.games}: Ember {result['ember_color']} {result['result']}"
                f" ({result['termination']}{', ' + result['detail'] if result['detail'] else ''})"
                f" plies {result['plies']} clocks {white_clock:.2f}/{black_clock:.2f}",
                flush=True,
            )
            if args.pgn:
                save_pgn(args.pgn, index, result, args.tc)
    except KeyboardInterrupt:
        print("interrupted; totals cover the finished games", file=sys.stderr)
    finally:
        ember.quit()
        stockfish.quit()
    print(json.dumps(totals), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
