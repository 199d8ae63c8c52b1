"""The options engine testers reach for: `PolicyTemperature`, `VerboseMoveStats`,
`LogFile` and `UCI_Chess960`, end to end through the `ember` binary.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import chess
import pytest

# One line of VerboseMoveStats per root move (lc0's format), and the root's line.
MOVE_STATS = re.compile(
    r"^info string (?P<move>[a-h][1-8][a-h][1-8][nbrq]?)\s+\(\s*(?P<index>\d+)\) "
    r"N:\s+(?P<n>\d+) \(\+\s*(?P<flight>\d+)\) \(P:\s+(?P<p>[\d.]+)%\) "
    r"\(Q:\s+(?P<q>-?[\d.]+)\) \(U:\s+(?P<u>[\d.]+)\) \(Q\+U:\s+(?P<s>-?[\d.]+)\) "
    r"\(V:\s+(?P<v>-?[\d.]+|-\.----)\)(?P<proven> \(T\))?$"
)
NODE_STATS = re.compile(
    r"^info string node  \(----\) N:\s+(?P<n>\d+) \(\+\s*(?P<flight>\d+)\) "
    r"\(P: 100\.00%\) \(Q:\s+(?P<q>-?[\d.]+)\) \(V:\s+(?P<v>-?[\d.]+|-\.----)\)$"
)
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (>>|<<) (.*)$")

# From a game of Chess960 (X-FEN): White may castle short (g1h1: the king stays on g1,
# the rook goes to f1) or long (g1e1: the king to c1, the rook to d1).
CASTLING_960 = "qnbnr1kr/1p3ppp/B1pbp3/p2p2B1/3PP3/2N5/PPP2PPP/QN2R1KR w KQkq - 2 6"


def errors(lines: list) -> list:
    return [line for line in lines if line.startswith("info string error")]


def move_stats(result) -> tuple:
    """(the move lines as dicts, the node line as a dict) of one search's output; the
    node line must be the last line before `bestmove`, the move lines right before it."""
    lines = result.lines[:-1]
    assert lines and NODE_STATS.match(lines[-1]), "\n".join(result.lines[-30:])
    node = NODE_STATS.match(lines[-1]).groupdict()
    moves = []
    for line in reversed(lines[:-1]):
        m = MOVE_STATS.match(line)
        if not m:
            break
        moves.append(m.groupdict())
    moves.reverse()
    return moves, node


def search_with_stats(engine, position: str, go: str, *options: tuple) -> tuple:
    engine.send("ucinewgame")
    engine.send("setoption name VerboseMoveStats value true")
    for name, value in options:
        engine.send(f"setoption name {name} value {value}")
    engine.send(position)
    assert not errors(engine.sync())
    return move_stats(engine.go(go))


# --------------------------------------------------------------------------
# VerboseMoveStats
# --------------------------------------------------------------------------


def test_verbose_move_stats_give_one_line_per_legal_root_move_before_bestmove(engine):
    board = chess.Board()
    board.push_uci("e2e4")
    moves, node = search_with_stats(engine, "position startpos moves e2e4", "nodes 200")
    legal = {m.uci() for m in board.legal_moves}
    assert sorted(m["move"] for m in moves) == sorted(legal)
    visits = [int(m["n"]) for m in moves]
    assert visits == sorted(visits), "fewest visits first, as lc0 prints them"
    # A fresh root's first visit is its own evaluation; every other went to a move.
    assert int(node["n"]) == 200
    assert sum(visits) == int(node["n"]) - 1
    assert abs(sum(float(m["p"]) for m in moves) - 100.0) < 0.2
    for m in moves:
        assert abs(float(m["q"]) + float(m["u"]) - float(m["s"])) < 2e-5, m
        assert int(m["flight"]) == 0
        assert (m["v"] == "-.----") == (int(m["n"]) == 0), m


def test_verbose_move_stats_end_with_the_move_played(engine):
    engine.send("setoption name VerboseMoveStats value true")
    engine.send("position startpos")
    result = engine.go("nodes 100")
    moves, node = move_stats(result)
    most = max(int(m["n"]) for m in moves)
    assert int(next(m for m in moves if m["move"] == result.bestmove)["n"]) == most
    assert int(moves[-1]["n"]) == most


def test_verbose_move_stats_are_off_by_default(engine):
    engine.send("position startpos")
    result = engine.go("nodes 50")
    assert not any(MOVE_STATS.match(l) or NODE_STATS.match(l) for l in result.lines)


# --------------------------------------------------------------------------
# PolicyTemperature
# --------------------------------------------------------------------------


def test_policy_temperature_flattens_above_one_and_sharpens_below(engine):
    def priors(temperature: str) -> dict:
        moves, _ = search_with_stats(
            engine, "position startpos", "nodes 1", ("PolicyTemperature", temperature)
        )
        assert len(moves) == 20
        return {m["move"]: float(m["p"]) for m in moves}

    network = priors("1.0")
    hot, cold = priors("3"), priors("0.3")
    best = max(network, key=network.get)
    assert max(hot.values()) < max(network.values()) < max(cold.values())
    assert min(hot.values()) > min(network.values())
    assert max(hot, key=hot.get) == best == max(cold, key=cold.get)
    # softmax(logits / T): the priors at T = 3 are those at T = 1 to the power 1/3,
    # normalised (to the 0.01 % the line prints).
    z = sum(p ** (1 / 3) for p in network.values())
    for move, p in network.items():
        assert abs(hot[move] - 100 * (p / 100) ** (1 / 3) / (z / 100 ** (1 / 3))) < 0.05
    assert priors("1") == network, "T = 1 is the network's policy again"


def test_policy_temperature_out_of_range_is_refused(engine):
    for value in ["0", "0.05", "11", "-1", "abc"]:
        engine.send(f"setoption name PolicyTemperature value {value}")
        assert errors(engine.sync()), value


# --------------------------------------------------------------------------
# LogFile
# --------------------------------------------------------------------------


def read_log(path: Path) -> list:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = LOG_LINE.match(line)
        assert m, f"not a log line: {line!r}"
        entries.append((m.group(1), m.group(2), m.group(3)))
    return entries


def test_log_file_holds_every_line_in_and_out_with_timestamps(engine, tmp_path):
    log = tmp_path / "ember.log"
    engine.send(f"setoption name LogFile value {log}")
    assert not errors(engine.sync())
    engine.handshake()
    engine.send("position startpos moves e2e4")
    result = engine.go("nodes 50")
    engine.send("setoption name LogFile value")
    engine.sync()
    engine.send("position startpos")
    engine.sync()

    entries = read_log(log)
    stamps = [stamp for stamp, _, _ in entries]
    assert stamps == sorted(stamps)
    inbound = [text for _, way, text in entries if way == ">>"]
    outbound = [text for _, way, text in entries if way == "<<"]
    assert inbound[:5] == [
        "isready",
        "uci",
        "position startpos moves e2e4",
        "go nodes 50",
        "setoption name LogFile value",
    ]
    assert "readyok" in outbound and "uciok" in outbound
    assert any(line.startswith("option name LogFile type string") for line in outbound)
    assert f"bestmove {result.bestmove}" in " ".join(outbound)
    assert outbound[-1].startswith("bestmove"), "nothing is logged once the log is off"
    assert [l for l in result.lines if l.startswith("info depth")] == [
        l for l in outbound if l.startswith("info depth")
    ]


def test_log_file_switches_files_and_appends(engine, tmp_path):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    first.write_text("", encoding="utf-8")
    engine.send(f"setoption name LogFile value {first}")
    engine.send("position startpos moves d2d4")
    engine.send(f"setoption name LogFile value {second}")
    engine.send("position startpos moves c2c4")
    engine.send(f"setoption name LogFile value {first}")
    engine.sync()
    engine.send("setoption name LogFile value <empty>")
    engine.sync()
    in_first = [text for _, way, text in read_log(first) if way == ">>"]
    in_second = [text for _, way, text in read_log(second) if way == ">>"]
    assert "position startpos moves d2d4" in in_first and "isready" in in_first
    assert "position startpos moves c2c4" not in in_first
    assert in_second == ["position startpos moves c2c4", f"setoption name LogFile value {first}"]


def test_a_log_file_that_cannot_be_opened_is_an_error_and_the_log_stays(engine, tmp_path):
    log = tmp_path / "ember.log"
    engine.send(f"setoption name LogFile value {log}")
    for bad in [tmp_path, tmp_path / "no" / "such" / "dir" / "x.log"]:
        engine.send(f"setoption name LogFile value {bad}")
        lines = engine.sync()
        assert errors(lines), lines
    engine.send("position startpos")
    assert chess.Move.from_uci(engine.go("nodes 20").bestmove) in chess.Board().legal_moves
    inbound = [text for _, way, text in read_log(log) if way == ">>"]
    assert inbound[-2:] == ["position startpos", "go nodes 20"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_log_file_that_cannot_be_written_never_stops_the_engine(engine):
    engine.send("setoption name LogFile value /dev/full")
    assert not errors(engine.sync())
    for _ in range(3):
        engine.send("position startpos moves e2e4")
        assert chess.Move.from_uci(engine.go("nodes 20").bestmove) is not None
        engine.sync()
    assert engine.is_alive()
    assert sum("log file /dev/full failed" in l for l in engine.stderr_tail) == 1


# --------------------------------------------------------------------------
# UCI_Chess960
# --------------------------------------------------------------------------


def test_a_chess960_fen_needs_uci_chess960(engine):
    engine.send(f"position fen {CASTLING_960}")
    lines = engine.sync()
    assert errors(lines) and "UCI_Chess960" in errors(lines)[0], lines
    engine.send("setoption name UCI_Chess960 value true")
    engine.send(f"position fen {CASTLING_960}")
    assert not errors(engine.sync())


def test_chess960_castling_is_played_and_read_as_king_takes_rook(engine):
    engine.send("setoption name UCI_Chess960 value true")
    engine.send(f"position fen {CASTLING_960}")
    for castling in ["g1h1", "g1e1"]:
        assert engine.go(f"nodes 30 searchmoves {castling}").bestmove == castling
    for castling, fen in [
        ("g1h1", "qnbnr1kr/1p3ppp/B1pbp3/p2p2B1/3PP3/2N5/PPP2PPP/QN2RRK1 b kq - 3 6"),
        ("g1e1", "qnbnr1kr/1p3ppp/B1pbp3/p2p2B1/3PP3/2N5/PPP2PPP/QNKR3R b kq - 3 6"),
    ]:
        engine.send(f"position fen {CASTLING_960} moves {castling}")
        engine.send("d")
        lines = engine.sync()
        assert f"Fen: {fen}" in lines, lines


def play_chess960_game(engine, board: chess.Board, max_plies: int) -> int:
    """Plays `go nodes 50` moves from `board` (a chess960 board); returns the castling
    moves that were legal along the way."""
    start = board.fen()
    engine.send("ucinewgame")
    castlings_legal = 0
    moves: list = []
    while not board.is_game_over(claim_draw=True) and len(moves) < max_plies:
        castlings_legal += any(board.is_castling(m) for m in board.legal_moves)
        engine.send(f"position fen {start}" + (" moves " + " ".join(moves) if moves else ""))
        result = engine.go("nodes 50")
        move = chess.Move.from_uci(result.bestmove)
        assert move in board.legal_moves, f"{result.bestmove} in {board.fen()}"
        assert not errors(result.lines), result.lines
        board.push(move)
        moves.append(result.bestmove)
    return castlings_legal


def test_chess960_games_from_random_start_positions_have_only_legal_moves(engine):
    engine.send("setoption name UCI_Chess960 value true")
    rng = random.Random(960)
    castlings_legal = 0
    for number in [rng.randrange(960) for _ in range(3)] + [518]:
        board = chess.Board.from_chess960_pos(number)
        board.chess960 = True
        castlings_legal += play_chess960_game(engine, board, 80)
    board = chess.Board(CASTLING_960, chess960=True)
    castlings_legal += play_chess960_game(engine, board, 40)
    assert castlings_legal > 0
