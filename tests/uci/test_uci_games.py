"""Whole games and analysis with the `ember` binary through python-chess.

Covers, with a real UCI client (chess.engine.SimpleEngine):
  * games against a seeded random mover at `Limit(nodes=64)`, every Ember move
    legal (and every ponder move legal after it);
  * games against Stockfish (Skill Level 0) with Ember on a 10 s + 0.1 s clock
    that the test keeps itself: Ember's clock never runs out and every move is
    legal;
  * python-chess `analyse`/`analysis` (including MultiPV) and `ping`.
Every engine call runs under a watchdog that kills the engine rather than let
the test hang.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time

import chess
import chess.engine
import pytest

STARTUP_TIMEOUT = 60.0
NODES_MOVE_TIMEOUT = 30.0
RANDOM_GAME_MAX_PLIES = 200
CLOCK_GAME_MAX_PLIES = 160
CLOCK_START = 10.0
CLOCK_INCREMENT = 0.1
STOCKFISH_MOVE_TIME = 0.05


@contextlib.contextmanager
def watchdog(engine: chess.engine.SimpleEngine, seconds: float, what: str):
    """Kill `engine` if the block takes longer than `seconds`, and fail."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        engine.close()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except chess.engine.EngineTerminatedError:
        if fired.is_set():
            pytest.fail(f"{what}: no answer within {seconds:.1f}s, engine killed")
        raise
    finally:
        timer.cancel()
    if fired.is_set():
        pytest.fail(f"{what}: no answer within {seconds:.1f}s, engine killed")


@contextlib.contextmanager
def open_engine(path):
    engine = chess.engine.SimpleEngine.popen_uci([str(path)], timeout=STARTUP_TIMEOUT)
    try:
        yield engine
    finally:
        try:
            engine.quit()
        except (chess.engine.EngineError, TimeoutError, RuntimeError):
            engine.close()


def ember_move(ember, board: chess.Board, limit: chess.engine.Limit, game: object, timeout: float) -> chess.Move:
    with watchdog(ember, timeout, f"Ember move at ply {board.ply()} ({board.fen()})"):
        result = ember.play(board, limit, game=game)
    assert result.move is not None, f"Ember returned no move in {board.fen()}"
    assert result.move in board.legal_moves, f"Ember played illegal {result.move} in {board.fen()}"
    if result.ponder is not None:
        after = board.copy(stack=False)
        after.push(result.move)
        assert result.ponder in after.legal_moves, f"illegal ponder move {result.ponder} after {result.move}"
    return result.move


def game_is_over(board: chess.Board, max_plies: int) -> bool:
    return board.is_game_over() or board.ply() >= max_plies


# --------------------------------------------------------------------------
# Games
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed,ember_color",
    [(1, chess.WHITE), (2, chess.BLACK)],
    ids=["ember_white", "ember_black"],
)
def test_game_against_random_mover_has_only_legal_ember_moves(ember_path, seed, ember_color):
    rng = random.Random(seed)
    board = chess.Board()
    game = object()
    ember_moves = 0
    with open_engine(ember_path) as ember:
        while not game_is_over(board, RANDOM_GAME_MAX_PLIES):
            if board.turn == ember_color:
                move = ember_move(ember, board, chess.engine.Limit(nodes=64), game, NODES_MOVE_TIMEOUT)
                ember_moves += 1
            else:
                move = rng.choice(sorted(board.legal_moves, key=lambda m: m.uci()))
            board.push(move)
        with watchdog(ember, 10.0, "ping after game"):
            ember.ping()
    assert ember_moves > 0


@pytest.mark.stockfish
@pytest.mark.parametrize("ember_color", [chess.WHITE, chess.BLACK], ids=["ember_white", "ember_black"])
def test_stockfish_clock_game_has_legal_moves_and_ember_never_flags(ember_path, stockfish_path, ember_color):
    board = chess.Board()
    game = object()
    clocks = {chess.WHITE: CLOCK_START, chess.BLACK: CLOCK_START}
    with open_engine(ember_path) as ember, open_engine(stockfish_path) as stockfish:
        stockfish.configure({"Skill Level": 0, "Threads": 1, "Hash": 16})
        while not game_is_over(board, CLOCK_GAME_MAX_PLIES):
            mover = board.turn
            start = time.monotonic()
            if mover == ember_color:
                limit = chess.engine.Limit(
                    white_clock=clocks[chess.WHITE],
                    black_clock=clocks[chess.BLACK],
                    white_inc=CLOCK_INCREMENT,
                    black_inc=CLOCK_INCREMENT,
                )
                move = ember_move(ember, board, limit, game, clocks[mover] + 5.0)
            else:
                with watchdog(stockfish, 30.0, "Stockfish move"):
                    move = stockfish.play(board, chess.engine.Limit(time=STOCKFISH_MOVE_TIME), game=game).move
                assert move is not None and move in board.legal_moves
            clocks[mover] -= time.monotonic() - start
            if mover == ember_color:
                assert clocks[mover] >= 0, (
                    f"Ember ran out of time at ply {board.ply()}: clock {clocks[mover]:.3f}s ({board.fen()})"
                )
            clocks[mover] += CLOCK_INCREMENT
            board.push(move)


# --------------------------------------------------------------------------
# Analysis through python-chess
# --------------------------------------------------------------------------


def test_python_chess_analyse_reports_score_and_legal_pv(ember_path):
    board = chess.Board("r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4")
    with open_engine(ember_path) as ember:
        with watchdog(ember, NODES_MOVE_TIMEOUT, "analyse"):
            info = ember.analyse(board, chess.engine.Limit(nodes=300))
    assert "score" in info, info
    assert info.get("pv"), info
    replay = board.copy()
    for move in info["pv"]:
        assert move in replay.legal_moves, f"illegal pv move {move} in {info['pv']}"
        replay.push(move)


def test_python_chess_analyse_with_multipv_returns_three_lines(ember_path):
    board = chess.Board()
    with open_engine(ember_path) as ember:
        with watchdog(ember, NODES_MOVE_TIMEOUT, "analyse multipv"):
            infos = ember.analyse(board, chess.engine.Limit(nodes=400), multipv=3)
    assert len(infos) == 3, infos
    first_moves = [info["pv"][0] for info in infos if info.get("pv")]
    assert len(set(first_moves)) == 3, first_moves
    assert all(move in board.legal_moves for move in first_moves)


def test_python_chess_infinite_analysis_can_be_stopped(ember_path):
    board = chess.Board()
    with open_engine(ember_path) as ember:
        with watchdog(ember, 30.0, "infinite analysis"):
            with ember.analysis(board) as analysis:
                time.sleep(1.0)
                analysis.stop()
                infos = list(analysis)
                best = analysis.wait()
        assert any("score" in info for info in infos), f"no scored info during infinite analysis: {infos}"
        assert best.move in board.legal_moves
        with watchdog(ember, 10.0, "ping after analysis"):
            ember.ping()
