"""UCI protocol conformance of the `ember` binary, driven over raw pipes.

Covers the `uci` handshake and advertised options, `isready` at any time,
`position` (startpos, FEN, move lists) and its error handling, every `go`
variant (nodes, depth, movetime, clocks, mate, infinite, ponder, searchmoves),
`stop`/`ponderhit` timing, exactly-one legal `bestmove` per `go`, the content
of `info` lines (fields, PV legality, WDL, MultiPV, mate scores), determinism
with one thread, the `d`/`eval`/`bench` extras, `ucinewgame` and `quit`.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time

import chess
import pytest

STARTPOS = chess.STARTING_FEN
BACK_RANK_MATE_FEN = "6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - - 0 1"
MIDDLEGAME_FEN = "r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4"

REQUIRED_OPTIONS = [
    "WeightsFile",
    "Device",
    "Threads",
    "MinibatchSize",
    "NNCacheSize",
    "RamLimitMb",
    "CPuct",
    "FpuReduction",
    "MoveOverhead",
    "MultiPV",
    "UCI_ShowWDL",
    "Solver",
    "Ponder",
    "Temperature",
    "PolicyTemperature",
    "MovesLeftSlope",
    "MovesLeftMaxEffect",
    "MovesLeftThreshold",
    "VerboseMoveStats",
    "LogFile",
    "UCI_Chess960",
]

OPTION_TYPES = {"check", "spin", "combo", "button", "string"}

# `position` commands whose resulting boards exercise castling, en passant,
# promotion (quiet and capturing), check evasion and long move lists.
POSITIONS = {
    "startpos": "position startpos",
    "startpos_with_moves": "position startpos moves e2e4 e7e5 g1f3 b8c6 f1b5 a7a6",
    "kiwipete": "position fen r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
    "kiwipete_after_castling": (
        "position fen r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1"
        " moves e1g1 e8c8"
    ),
    "en_passant_available": "position fen rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
    "en_passant_after_moves": "position startpos moves e2e4 a7a6 e4e5 d7d5",
    "promotion": "position fen 8/P5k1/8/8/8/8/8/4K3 w - - 0 1",
    "promotion_capture_black": "position fen r3k2r/8/8/8/8/8/1p6/R3K2R b KQkq - 0 1",
    "single_evasion_in_check": "position fen rnbqkbnr/ppppp1pp/8/5p1Q/4P3/8/PPPP1PPP/RNB1KBNR b KQkq - 1 2",
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def board_for(position_command: str) -> chess.Board:
    """The python-chess board a `position ...` command describes."""
    tokens = position_command.split()
    assert tokens[0] == "position"
    moves: list = []
    if "moves" in tokens:
        split = tokens.index("moves")
        moves = tokens[split + 1 :]
        tokens = tokens[:split]
    if tokens[1] == "startpos":
        board = chess.Board()
    else:
        board = chess.Board(" ".join(tokens[2:]))
    for move in moves:
        board.push_uci(move)
    return board


def assert_legal(board: chess.Board, uci: str, what: str = "bestmove") -> chess.Move:
    try:
        move = chess.Move.from_uci(uci)
    except ValueError:
        pytest.fail(f"{what} {uci!r} is not a UCI move (position {board.fen()})")
    assert move in board.legal_moves, f"{what} {uci} is illegal in {board.fen()}"
    return move


def move_of(bestmove_line: str) -> str:
    tokens = bestmove_line.split()
    return tokens[1] if len(tokens) > 1 else ""


def bestmoves(lines: list) -> list:
    return [line for line in lines if line.startswith("bestmove")]


def errors(lines: list) -> list:
    return [line for line in lines if line.lower().startswith("info string error")]


def fen_shown_by_d(engine) -> str:
    engine.send("d")
    lines = engine.sync()
    fens = [line.strip()[len("Fen: ") :].strip() for line in lines if line.strip().startswith("Fen: ")]
    assert fens, "`d` printed no line starting with 'Fen: ':\n" + "\n".join(lines)
    return fens[-1]


def accepted_fens(board: chess.Board) -> set:
    """FEN of `board`, with the en-passant square written either only when a
    capture is legal (python-chess default) or after every double push."""
    return {board.fen(), board.fen(en_passant="fen")}


def parse_option_lines(lines: list) -> dict:
    """`option name <N> type <T> [default <D>] [min <a>] [max <b>] [var <v>]*`."""
    keywords = {"type", "default", "min", "max", "var"}
    options = {}
    for line in lines:
        tokens = line.split(" ")
        if tokens[:2] != ["option", "name"]:
            continue
        name_tokens: list = []
        i = 2
        while i < len(tokens) and tokens[i] not in keywords:
            name_tokens.append(tokens[i])
            i += 1
        fields: dict = {"var": []}
        key = None
        value: list = []
        for token in tokens[i:] + ["type"]:
            if token in keywords:
                if key == "var":
                    fields["var"].append(" ".join(value))
                elif key is not None:
                    fields[key] = " ".join(value)
                key, value = token, []
            else:
                value.append(token)
        fields["type"] = fields.get("type", "")
        options[" ".join(name_tokens)] = fields
    return options


def advertised_options(raw_engine) -> dict:
    return parse_option_lines(raw_engine.handshake())


def last_primary_info(result) -> dict:
    """The last scored info line of the principal (multipv 1) line."""
    primary = [info for info in result.search_infos if info.get("multipv", 1) == 1]
    assert primary, "no info line with a score before bestmove:\n" + "\n".join(result.lines)
    return primary[-1]


# --------------------------------------------------------------------------
# Handshake and options
# --------------------------------------------------------------------------


def test_uci_reports_engine_name_ember_with_version(raw_engine):
    lines = raw_engine.handshake()
    names = [line for line in lines if line.startswith("id name ")]
    assert len(names) == 1, lines
    assert re.fullmatch(r"id name Ember \S+.*", names[0]), names[0]


def test_uci_reports_author(raw_engine):
    lines = raw_engine.handshake()
    authors = [line for line in lines if line.startswith("id author ")]
    assert len(authors) == 1, lines
    assert authors[0][len("id author ") :].strip(), authors[0]


@pytest.mark.parametrize("name", REQUIRED_OPTIONS)
def test_uci_advertises_option(raw_engine, name):
    options = advertised_options(raw_engine)
    assert name in options, f"option {name} missing; advertised: {sorted(options)}"


def test_uci_options_declare_valid_types(raw_engine):
    options = advertised_options(raw_engine)
    assert options
    bad = {name: fields["type"] for name, fields in options.items() if fields["type"] not in OPTION_TYPES}
    assert not bad, f"options with invalid type: {bad}"


def test_uci_spin_options_have_default_within_min_max(raw_engine):
    options = advertised_options(raw_engine)
    for name, fields in options.items():
        if fields["type"] != "spin":
            continue
        lo, default, hi = int(fields["min"]), int(fields["default"]), int(fields["max"])
        assert lo <= default <= hi, f"{name}: min {lo} default {default} max {hi}"


def test_uci_check_options_default_to_true_or_false(raw_engine):
    options = advertised_options(raw_engine)
    for name, fields in options.items():
        if fields["type"] == "check":
            assert fields.get("default") in ("true", "false"), f"{name}: {fields}"


def test_uci_ends_with_uciok_after_id_and_options(raw_engine):
    lines = raw_engine.handshake()
    assert lines[-1] == "uciok"
    assert any(line.startswith("id name ") for line in lines[:-1])
    assert any(line.startswith("option name ") for line in lines[:-1])
    assert raw_engine.is_alive()


def test_isready_answers_readyok(engine):
    engine.send("isready")
    assert engine.expect("readyok", 5.0) == "readyok"


def test_isready_before_uci_answers_readyok(raw_engine, timeouts):
    raw_engine.send("isready")
    assert raw_engine.expect("readyok", timeouts.startup) == "readyok"


def test_isready_is_answered_during_infinite_search(engine):
    engine.send("position startpos")
    engine.send("go infinite")
    before = engine.collect(0.5)
    assert not bestmoves(before), "go infinite returned before stop"
    start = time.perf_counter()
    engine.send("isready")
    during = engine.read_until("readyok", 1.0)
    assert engine.last_stamp - start < 1.0
    assert not bestmoves(during), "isready ended the infinite search"
    engine.send("stop")
    engine.expect("bestmove", 2.0)
    assert not bestmoves(engine.sync())


def test_setting_each_option_to_its_default_is_accepted(raw_engine):
    options = advertised_options(raw_engine)
    raw_engine.sync(60.0)
    for name, fields in options.items():
        default = fields.get("default", "")
        if fields["type"] == "button" or not default:
            continue
        raw_engine.send(f"setoption name {name} value {default}")
        lines = raw_engine.sync(60.0)
        assert not errors(lines), f"setoption {name} = {default!r}: {lines}"
    raw_engine.send("position startpos")
    assert_legal(chess.Board(), raw_engine.go("nodes 50").bestmove)


def test_unknown_option_reports_error(engine):
    engine.send("setoption name NoSuchOption value 1")
    lines = engine.sync()
    assert errors(lines), f"no 'info string error' for an unknown option: {lines}"
    assert engine.is_alive()


# --------------------------------------------------------------------------
# position and d
# --------------------------------------------------------------------------


def test_d_shows_fen_of_position_after_moves(engine):
    engine.send("position startpos moves e2e4")
    assert fen_shown_by_d(engine) in accepted_fens(board_for("position startpos moves e2e4"))


def test_d_shows_fen_of_position_given_by_fen(engine):
    command = POSITIONS["kiwipete"]
    engine.send(command)
    assert fen_shown_by_d(engine) in accepted_fens(board_for(command))


def test_position_fen_with_moves_applies_the_moves(engine):
    command = POSITIONS["kiwipete_after_castling"]
    engine.send(command)
    assert fen_shown_by_d(engine) in accepted_fens(board_for(command))


def test_position_replaces_previous_position(engine):
    engine.send("position startpos moves e2e4 e7e5")
    engine.send("position startpos moves d2d4")
    assert fen_shown_by_d(engine) in accepted_fens(board_for("position startpos moves d2d4"))


def test_illegal_move_in_position_reports_error(engine):
    engine.send("position startpos moves e2e5")
    lines = engine.sync()
    assert errors(lines), f"no 'info string error' for illegal move e2e5: {lines}"
    assert engine.is_alive()


def test_illegal_move_in_position_keeps_previous_position(engine):
    engine.send("position startpos moves e2e4")
    engine.send("position startpos moves d2d4 d7d5 e2e5")
    engine.sync()
    assert fen_shown_by_d(engine) in accepted_fens(board_for("position startpos moves e2e4"))


def test_bad_fen_reports_error(engine):
    engine.send("position fen garbage")
    lines = engine.sync()
    assert errors(lines), f"no 'info string error' for a bad FEN: {lines}"
    assert engine.is_alive()


def test_bad_fen_keeps_previous_position(engine):
    engine.send("position startpos moves e2e4")
    engine.send("position fen garbage")
    engine.sync()
    assert fen_shown_by_d(engine) in accepted_fens(board_for("position startpos moves e2e4"))


def test_search_after_rejected_position_uses_previous_position(engine):
    engine.send("position startpos moves e2e4")
    engine.send("position fen garbage")
    result = engine.go("nodes 50")
    assert_legal(board_for("position startpos moves e2e4"), result.bestmove)


# --------------------------------------------------------------------------
# go and bestmove
# --------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(POSITIONS.values()), ids=list(POSITIONS))
def test_bestmove_is_legal(engine, command):
    engine.send(command)
    result = engine.go("nodes 100")
    assert_legal(board_for(command), result.bestmove)


def test_ponder_move_is_legal_after_bestmove(engine):
    for command in POSITIONS.values():
        engine.send(command)
        result = engine.go("nodes 200")
        board = board_for(command)
        board.push(assert_legal(board, result.bestmove))
        if result.ponder is not None:
            assert_legal(board, result.ponder, "ponder move")


def test_each_go_prints_exactly_one_bestmove(engine):
    engine.send("position startpos")
    seen = []
    for _ in range(4):
        seen += engine.go("nodes 30").lines
    seen += engine.sync()
    seen += engine.drain(0.5)
    assert len(bestmoves(seen)) == 4, bestmoves(seen)


def test_go_depth_returns_legal_bestmove(engine):
    engine.send("position startpos")
    assert_legal(chess.Board(), engine.go("depth 3").bestmove)


def test_go_nodes_returns_legal_bestmove(engine):
    engine.send(POSITIONS["kiwipete"])
    assert_legal(board_for(POSITIONS["kiwipete"]), engine.go("nodes 1").bestmove)


def test_go_movetime_returns_within_movetime(engine):
    engine.send("position startpos")
    result = engine.go("movetime 500", timeout=10.0)
    assert_legal(chess.Board(), result.bestmove)
    assert result.elapsed < 0.5 + 0.25, f"movetime 500 took {result.elapsed:.3f}s"


@pytest.mark.parametrize(
    "command,go_args",
    [
        ("position startpos", "wtime 1000 btime 600000 winc 0 binc 0"),
        ("position startpos moves e2e4", "wtime 600000 btime 1000 winc 0 binc 0"),
    ],
    ids=["white_to_move", "black_to_move"],
)
def test_go_clock_moves_before_side_to_move_flag_falls(engine, command, go_args):
    engine.send(command)
    result = engine.go(go_args, timeout=10.0)
    assert_legal(board_for(command), result.bestmove)
    assert result.elapsed < 1.0, f"`go {go_args}` took {result.elapsed:.3f}s with 1 s on the clock"


def test_go_with_increment_and_movestogo_returns_legal_bestmove(engine):
    engine.send("position startpos moves d2d4")
    result = engine.go("wtime 5000 btime 5000 winc 100 binc 100 movestogo 20", timeout=15.0)
    assert_legal(board_for("position startpos moves d2d4"), result.bestmove)
    assert result.elapsed < 5.0


def test_go_mate_finds_mate_in_one(engine):
    engine.send(f"position fen {BACK_RANK_MATE_FEN}")
    result = engine.go("mate 1")
    assert result.bestmove == "d1d8"


def test_go_infinite_waits_for_stop(engine):
    engine.send("position startpos")
    engine.send("go infinite")
    lines = engine.collect(1.5)
    assert not bestmoves(lines), "go infinite returned bestmove without stop"
    engine.send("stop")
    assert_legal(chess.Board(), move_of(engine.expect("bestmove", 2.0)))
    assert not bestmoves(engine.sync())


def test_stop_returns_bestmove_within_50ms(engine):
    # Latency is measured from just before writing `stop` to the moment the
    # reader thread receives the `bestmove` line. Shared CI machines stall
    # processes for tens of milliseconds at random, so the 50 ms promise is
    # checked on the median of 5 tries, while each single try only has to be
    # under 250 ms.
    latencies = []
    for _ in range(5):
        engine.send("position startpos")
        engine.send("go infinite")
        assert not bestmoves(engine.collect(0.3))
        start = time.perf_counter()
        engine.send("stop")
        line = engine.expect("bestmove", 2.0)
        latencies.append(engine.last_stamp - start)
        assert_legal(chess.Board(), move_of(line))
        engine.sync()
    assert statistics.median(latencies) < 0.050, f"stop latencies (s): {latencies}"
    assert max(latencies) < 0.250, f"stop latencies (s): {latencies}"


def test_stop_without_search_prints_no_bestmove(engine):
    engine.send("position startpos")
    engine.send("stop")
    lines = engine.sync() + engine.drain(0.3)
    assert not bestmoves(lines)


def test_ponderhit_without_search_prints_no_bestmove(engine):
    engine.send("position startpos")
    engine.send("ponderhit")
    lines = engine.sync() + engine.drain(0.3)
    assert not bestmoves(lines)


def test_go_ponder_waits_for_ponderhit(engine):
    engine.send("setoption name Ponder value true")
    engine.send("position startpos moves e2e4 e7e5")
    engine.send("go ponder wtime 2000 btime 2000 winc 0 binc 0")
    lines = engine.collect(1.5)
    assert not bestmoves(lines), "go ponder returned bestmove before ponderhit"
    engine.send("stop")
    engine.expect("bestmove", 2.0)


def test_ponderhit_turns_ponder_search_into_timed_search(engine):
    command = "position startpos moves e2e4 e7e5"
    engine.send("setoption name Ponder value true")
    engine.send(command)
    engine.send("go ponder wtime 2000 btime 2000 winc 0 binc 0")
    assert not bestmoves(engine.collect(0.5))
    start = time.perf_counter()
    engine.send("ponderhit")
    line = engine.expect("bestmove", 10.0)
    elapsed = engine.last_stamp - start
    assert_legal(board_for(command), move_of(line))
    assert elapsed < 2.0, f"bestmove came {elapsed:.3f}s after ponderhit with 2 s on the clock"
    assert not bestmoves(engine.sync())


def test_stop_during_ponder_returns_one_legal_bestmove(engine):
    command = "position startpos moves e2e4 e7e5"
    engine.send("setoption name Ponder value true")
    engine.send(command)
    engine.send("go ponder wtime 60000 btime 60000")
    assert not bestmoves(engine.collect(0.5))
    engine.send("stop")
    assert_legal(board_for(command), move_of(engine.expect("bestmove", 1.0)))
    assert not bestmoves(engine.sync() + engine.drain(0.3))


def test_searchmoves_restricts_bestmove(engine):
    engine.send("position startpos")
    result = engine.go("searchmoves e2e4 d2d4 nodes 50")
    assert result.bestmove in {"e2e4", "d2d4"}


def test_searchmoves_with_single_move_plays_it(engine):
    engine.send("position startpos")
    result = engine.go("searchmoves a2a3 nodes 50")
    assert result.bestmove == "a2a3"


def test_nodes_search_is_deterministic_with_one_thread(engine):
    engine.send("setoption name Threads value 1")
    moves = []
    for _ in range(3):
        engine.send("ucinewgame")
        engine.send(f"position fen {MIDDLEGAME_FEN}")
        moves.append(engine.go("nodes 300").bestmove)
    assert_legal(chess.Board(MIDDLEGAME_FEN), moves[0])
    assert len(set(moves)) == 1, f"bestmoves differ between identical searches: {moves}"


# --------------------------------------------------------------------------
# info lines
# --------------------------------------------------------------------------


def test_info_reports_depth_nodes_nps_time_score_and_pv(engine):
    engine.send("position startpos")
    result = engine.go("movetime 1500", timeout=15.0)
    complete = [
        info
        for info in result.infos
        if all(isinstance(info.get(key), int) for key in ("depth", "nodes", "nps", "time"))
        and info.get("score", ("", ""))[0] in ("cp", "mate")
        and isinstance(info["score"][1], int)
        and info.get("pv")
    ]
    assert complete, "no info line with depth, nodes, nps, time, score and pv:\n" + "\n".join(result.info_lines)
    assert complete[-1]["nodes"] > 0


def test_info_pv_is_legal_move_sequence(engine):
    command = POSITIONS["kiwipete"]
    engine.send(command)
    result = engine.go("nodes 400")
    infos = [info for info in result.search_infos if info.get("pv")]
    assert infos, "no info line with a pv"
    for info in infos:
        board = board_for(command)
        for move in info["pv"]:
            board.push(assert_legal(board, move, f"pv move (pv {' '.join(info['pv'])})"))


def test_show_wdl_reports_wdl_summing_to_1000(engine):
    engine.send("setoption name UCI_ShowWDL value true")
    engine.send("position startpos")
    result = engine.go("nodes 200")
    infos = result.search_infos
    assert infos, "no scored info lines"
    for info in infos:
        assert "wdl" in info, f"scored info line without wdl: {info}"
        w, d, l = info["wdl"]
        assert min(w, d, l) >= 0 and w + d + l == 1000, f"wdl {info['wdl']}"


def test_multipv_3_final_report_has_three_distinct_lines(engine):
    engine.send("setoption name MultiPV value 3")
    engine.send("position startpos")
    result = engine.go("nodes 400")
    with_multipv = [info for info in result.search_infos if "multipv" in info]
    final = with_multipv[-3:]
    assert sorted(info["multipv"] for info in final) == [1, 2, 3], "\n".join(result.info_lines)
    first_moves = [info["pv"][0] for info in final if info.get("pv")]
    assert len(set(first_moves)) == 3, f"final multipv lines do not start with 3 distinct moves: {first_moves}"
    for move in first_moves:
        assert_legal(chess.Board(), move, "multipv first move")


def test_back_rank_mate_is_played(engine):
    engine.send(f"position fen {BACK_RANK_MATE_FEN}")
    assert engine.go("nodes 800").bestmove == "d1d8"


def test_back_rank_mate_reports_score_mate_1(engine):
    engine.send(f"position fen {BACK_RANK_MATE_FEN}")
    result = engine.go("nodes 800")
    assert last_primary_info(result)["score"] == ("mate", 1)


# --------------------------------------------------------------------------
# Extras, ucinewgame, quit
# --------------------------------------------------------------------------


def test_eval_prints_output(engine):
    engine.send("position startpos")
    engine.send("eval")
    lines = engine.sync(30.0)
    assert [line for line in lines if line.strip()], "eval printed nothing before readyok"


def _number_for(word: str, line: str):
    after = re.search(rf"\b{word}\b\s*[:=]?\s*(\d+)", line, re.IGNORECASE)
    before = re.search(rf"(\d+)\s*{word}\b", line, re.IGNORECASE)
    if re.search(r"\bnps\b\s*[:=]?\s*\d", line, re.IGNORECASE):
        match = after or before
    else:
        match = before or after
    return int(match.group(1)) if match else None


def _is_bench_summary(line: str) -> bool:
    return _number_for("nodes", line) is not None and _number_for("nps", line) is not None


def test_bench_reports_positive_nodes_and_nps(engine):
    engine.send("bench")
    engine.send("isready")
    lines = engine.read_until("readyok", 180.0)
    if not any(_is_bench_summary(line) for line in lines):
        lines += engine.read_until(_is_bench_summary, 180.0)
    lines += engine.drain(1.0)
    summary = [line for line in lines if _is_bench_summary(line)][-1]
    assert _number_for("nodes", summary) > 0, summary
    assert _number_for("nps", summary) >= 0, summary
    assert engine.is_alive()


def test_ucinewgame_after_game_allows_new_search(engine):
    board = chess.Board()
    for _ in range(8):
        engine.send("position startpos moves " + " ".join(m.uci() for m in board.move_stack))
        board.push(assert_legal(board, engine.go("nodes 50").bestmove))
    engine.send("ucinewgame")
    engine.send("position startpos")
    assert_legal(chess.Board(), engine.go("nodes 100").bestmove)


def test_quit_exits_promptly_with_code_zero(engine):
    engine.send("quit")
    try:
        code = engine.proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pytest.fail("engine still running 2 s after quit")
    assert code == 0


def test_quit_during_search_exits_promptly_with_code_zero(engine):
    engine.send("position startpos")
    engine.send("go infinite")
    engine.collect(0.3)
    engine.send("quit")
    try:
        code = engine.proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pytest.fail("engine still running 2 s after quit during a search")
    assert code == 0
