#!/usr/bin/env python3
"""A UCI engine that misbehaves on purpose, for the match runner's tests.

Usage: fake_uci.py MODE, where MODE says what it does when asked to move:
  crash      exits with status 3
  hang       never answers
  illegal    answers `bestmove e2e5` (never legal: a pawn cannot go three squares)
  malformed  answers `bestmove ??`
  slow       thinks for two seconds before it answers (`bestmove a2a3`): out of time at 1+0
  castle960  plays legal moves in Chess960 (python-chess keeps the board): castles when it
             can, else develops a back-rank piece, else any move. A castling move it is sent
             in the other notation, a move that is not legal, or a Chess960 position before
             `setoption name UCI_Chess960 value true` makes it answer `bestmove 0000`, so
             the game is forfeited and the test sees it.
It answers the handshake (uci, isready) like any engine.
"""
import random
import sys
import time

mode = sys.argv[1] if len(sys.argv) > 1 else "crash"
chess960 = False
board = None
rng = random.Random(7)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_position(cmd):
    """The board of a `position fen F [moves ...]` line, or None if any move is not legal
    in the notation of the current UCI_Chess960 setting."""
    import chess

    words = cmd.split()
    fen_end = words.index("moves") if "moves" in words else len(words)
    fen = " ".join(words[2:fen_end])
    if not chess960 and chess.Board(fen, chess960=True).has_chess960_castling_rights():
        return None  # a Chess960 start, but the GUI did not say so
    b = chess.Board(fen, chess960=chess960)
    for text in words[fen_end + 1 :]:
        move = chess.Move.from_uci(text)
        if move not in b.legal_moves:
            return None
        if b.is_castling(move) and chess960 != (b.piece_at(move.to_square) is not None):
            return None
        b.push(move)
    return b


def castle960_move(b):
    import chess

    moves = list(b.legal_moves)
    castles = [m for m in moves if b.is_castling(m)]
    if castles:
        return castles[0]
    back = 0 if b.turn == chess.WHITE else 7
    develop = [
        m
        for m in moves
        if chess.square_rank(m.from_square) == back
        and b.piece_type_at(m.from_square) not in (chess.KING, chess.ROOK)
    ]
    return rng.choice(develop or moves)


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
    elif cmd.startswith("setoption name UCI_Chess960 value"):
        chess960 = cmd.split()[-1] == "true"
    elif cmd.startswith("position fen") and mode == "castle960":
        board = read_position(cmd)
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
        elif mode == "castle960":
            if board is None or board.is_game_over():
                say("bestmove 0000")
            else:
                say("bestmove " + board.uci(castle960_move(board)))
