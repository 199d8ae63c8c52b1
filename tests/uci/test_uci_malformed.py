"""Robustness of the `ember` binary against malformed and hostile UCI input.

Every entry of HOSTILE_INPUT (huge numbers, truncated commands, bad FENs,
illegal and nonsense moves, binary garbage with NUL bytes, a 1 MB line, empty
and whitespace-only lines, Windows line endings, unicode, unknown `go` tokens,
out-of-range and ill-typed options, `stop`/`ponderhit` with no search running,
quit-like junk) is sent on its own to a fresh engine, which must keep answering
`isready` within 5 s, stay alive, and still play a legal move afterwards. The
whole list is also sent to a single engine in one session. A few inputs have
exact expected outcomes tested separately (CRLF handling, a missing weights
file).
"""

from __future__ import annotations

import random

import chess
import pytest

READY_WITHIN = 5.0
STARTPOS = chess.STARTING_FEN


def _random_garbage(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    data = bytearray(rng.getrandbits(8) for _ in range(size))
    for i in range(0, size, 97):
        data[i] = 0
    return bytes(data) + b"\n"


def _one_megabyte_of_legal_moves() -> bytes:
    cycle = b" g1f3 g8f6 f3g1 f6g8"
    line = b"position startpos moves" + cycle * ((1 << 20) // len(cycle))
    return line + b"\n"


HOSTILE_INPUT = {
    # Numbers that do not fit, are negative, or are absurdly large.
    "go_depth_20_digits": "go depth 99999999999999999999",
    "go_depth_300": "go depth 300",
    "go_mate_1000": "go mate 1000",
    "go_movestogo_256": "go movestogo 256",
    "go_negative_clocks": "go wtime -5 btime -5",
    "go_nodes_2_pow_64": "go nodes 18446744073709551616",
    "go_movetime_negative": "go movetime -1",
    "go_nodes_negative": "go nodes -1",
    "go_wtime_overflow": "go wtime 99999999999999999999999 btime 1",
    "go_movetime_zero": "go movetime 0",
    # Truncated commands.
    "position_alone": "position",
    "position_fen_without_fen": "position fen",
    "position_startpos_moves_without_moves": "position startpos moves",
    "go_wtime_without_value": "go wtime",
    "go_searchmoves_without_moves": "go searchmoves",
    "setoption_alone": "setoption",
    "setoption_name_without_name": "setoption name",
    "setoption_threads_without_value": "setoption name Threads value",
    "position_fen_truncated": "position fen rnbqkbnr/pppppppp",
    # Bad FENs.
    "fen_seven_ranks": "position fen rnbqkbnr/pppppppp/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
    "fen_nine_ranks": "position fen rnbqkbnr/pppppppp/8/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
    "fen_two_white_kings": "position fen 4k3/8/8/8/8/8/8/3KK3 w - - 0 1",
    "fen_no_kings": "position fen 8/8/8/8/8/8/8/8 w - - 0 1",
    "fen_side_to_move_x": "position fen rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR x KQkq - 0 1",
    "fen_castling_without_rooks": "position fen 4k3/8/8/8/8/8/8/4K3 w Kq - 0 1",
    "fen_shredder_castling": "position fen rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w HAha - 0 1",
    "fen_pawn_on_rank_8": "position fen P3k3/8/8/8/8/8/8/4K3 w - - 0 1",
    "fen_nine_pieces_in_rank": "position fen rnbqkbnrr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
    "fen_opponent_in_check": "position fen 4k3/4R3/8/8/8/8/8/4K3 w - - 0 1",
    "fen_en_passant_off_board": "position fen rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq e9 0 1",
    "fen_negative_halfmove_clock": "position fen rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - -5 1",
    "fen_huge_fullmove_number": (
        "position fen rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 99999999999999999999"
    ),
    "fen_unknown_piece_letter": "position fen rnbqkbnr/ppppXppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
    "fen_digit_nine": "position fen rnbqkbnr/pppppppp/9/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
    # Illegal and nonsense moves.
    "move_e2e5": "position startpos moves e2e5",
    "move_zzzz": "position startpos moves zzzz",
    "move_e7e8q_from_start": "position startpos moves e7e8q",
    "move_castle_through_pieces": "position startpos moves e1g1",
    "move_repeated_e2e4": "position startpos moves e2e4 e2e4",
    "move_null_square": "position startpos moves a1a1",
    "move_castle_after_e4_e5": "position startpos moves e2e4 e7e5 e1g1",
    "move_promotion_to_king": "position fen 8/P5k1/8/8/8/8/8/4K3 w - - 0 1 moves a7a8k",
    # Binary garbage.
    "random_bytes_with_nul": _random_garbage(20240613, 4096),
    "nul_bytes_only": b"\x00\x00\x00\x00\n",
    "nul_inside_go": b"go\x00nodes 5\n",
    "invalid_utf8": b"\xff\xfe\xfd\xc3\x28 position startpos\n",
    "ansi_escapes": b"\x1b[2J\x1b[31mposition startpos\x1b[0m\n",
    # Sizes and whitespace.
    "one_megabyte_line": b"x" * (1 << 20) + b"\n",
    "one_megabyte_of_legal_moves": _one_megabyte_of_legal_moves(),
    "empty_line": b"\n",
    "spaces_and_tabs": b"   \t \t\t   \n",
    # Windows line endings.
    "crlf_isready": b"isready\r\n",
    "crlf_position": b"position startpos moves e2e4\r\n",
    "crlf_ucinewgame": b"ucinewgame\r\n",
    "crlf_only": b"\r\n",
    # Unicode.
    "cyrillic_move": "position startpos moves \u0435\u0032\u0435\u0034",
    "fullwidth_digit_threads": "setoption name Threads value \uff14",
    "chess_symbol_in_go": "go nodes 50 \u265e",
    "emoji": "\U0001f642\U0001f642\U0001f642",
    "right_to_left_override": "\u202eisready",
    # go with unknown tokens.
    "go_unknown_tokens": "go foo bar",
    "go_nodes_with_unknown_token": "go nodes 50 frobnicate 7",
    "go_non_numeric_clocks": "go wtime abc btime def",
    "go_ponder_without_ponder_option": "go ponder",
    # setoption with bad values.
    "threads_negative": "setoption name Threads value -3",
    "threads_100000": "setoption name Threads value 100000",
    "multipv_abc": "setoption name MultiPV value abc",
    "multipv_zero": "setoption name MultiPV value 0",
    "weights_file_missing": "setoption name WeightsFile value /nonexistent/file.safetensors",
    "nncachesize_huge": "setoption name NNCacheSize value 99999999999999",
    "minibatchsize_zero": "setoption name MinibatchSize value 0",
    "cpuct_nan": "setoption name CPuct value NaN",
    "temperature_negative": "setoption name Temperature value -1",
    "device_unknown": "setoption name Device value quantum",
    "setoption_reversed": "setoption value 3 name Threads",
    "show_wdl_maybe": "setoption name UCI_ShowWDL value maybe",
    # Commands out of context and near-misses.
    "stop_without_search": "stop",
    "ponderhit_without_search": "ponderhit",
    "quitx": "quitx",
    "ucinewgamex": "ucinewgamex",
    "d_with_arguments": "d d d",
    "position_startpos_and_fen": "position startpos fen 8/8/8/8/8/8/8/8 w - - 0 1",
    "debug_on": "debug on",
    "register_later": "register later",
}

def _assert_legal_bestmove_from_startpos(engine) -> None:
    engine.send("position startpos")
    move = engine.go("nodes 50").bestmove
    try:
        parsed = chess.Move.from_uci(move)
    except ValueError:
        pytest.fail(f"bestmove {move!r} is not a UCI move")
    assert parsed in chess.Board().legal_moves, f"bestmove {move} is illegal from the start position"


def _survive(engine, payload) -> None:
    engine.send(payload)
    engine.send("isready")
    engine.read_until("readyok", READY_WITHIN)
    assert engine.is_alive(), engine.describe()
    engine.settle()
    assert engine.is_alive(), engine.describe()


@pytest.mark.parametrize("payload", list(HOSTILE_INPUT.values()), ids=list(HOSTILE_INPUT))
def test_engine_survives_malformed_line(engine, payload):
    _survive(engine, payload)
    _assert_legal_bestmove_from_startpos(engine)


def test_engine_survives_all_malformed_lines_in_one_session(engine):
    for name, payload in HOSTILE_INPUT.items():
        try:
            _survive(engine, payload)
        except AssertionError as exc:
            raise AssertionError(f"after hostile input {name!r}: {exc}") from None
    _assert_legal_bestmove_from_startpos(engine)
    assert engine.close() == 0, "engine did not quit cleanly after the hostile session"


def test_isready_with_crlf_gets_readyok(engine):
    engine.send(b"isready\r\n")
    assert engine.expect("readyok", READY_WITHIN).strip() == "readyok"


def test_position_with_crlf_is_accepted(engine):
    engine.send(b"position startpos moves e2e4\r\n")
    engine.send("d")
    lines = engine.sync()
    assert not [line for line in lines if line.lower().startswith("info string error")], lines
    fens = [line.strip()[len("Fen: ") :].strip() for line in lines if line.strip().startswith("Fen: ")]
    board = chess.Board()
    board.push_uci("e2e4")
    assert fens and fens[-1] in {board.fen(), board.fen(en_passant="fen")}, lines


def test_quitx_does_not_quit(engine):
    engine.send("quitx")
    engine.sync()
    assert engine.is_alive()


def test_nonexistent_weights_file_reports_error_and_keeps_playing(engine):
    engine.send("setoption name WeightsFile value /nonexistent/file.safetensors")
    lines = engine.sync(30.0)
    assert [line for line in lines if line.lower().startswith("info string error")], (
        f"no 'info string error' for a missing weights file: {lines}"
    )
    _assert_legal_bestmove_from_startpos(engine)
