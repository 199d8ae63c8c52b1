"""Shared harness for the end-to-end UCI tests of the `ember` binary.

Provides:
  * locating the engine (env EMBER_BIN, else <repo>/target/release/ember) and
    Stockfish (env STOCKFISH_BIN, else /usr/games/stockfish), skipping tests
    with a clear reason when either is missing;
  * `UciEngine`, a raw protocol driver around subprocess.Popen whose reads all
    time out instead of hanging;
  * fixtures `engine` (ready for commands), `raw_engine` (no handshake yet),
    `start_engine` (factory), `ember_path` and `stockfish_path`.
"""

from __future__ import annotations

import collections
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Timeouts (seconds). Generous on purpose: CI runs on 2 cores without a GPU.
STARTUP_TIMEOUT = 60.0
READY_TIMEOUT = 5.0
SEARCH_TIMEOUT = 30.0
QUIT_TIMEOUT = 5.0
WRITE_TIMEOUT = 20.0

INFO_KEYWORDS = frozenset(
    {
        "depth", "seldepth", "time", "nodes", "nps", "hashfull", "tbhits",
        "multipv", "currmove", "currmovenumber", "cpuload", "score", "wdl",
        "pv", "string", "refutation", "currline", "movesleft",
    }
)
_INT_FIELDS = (
    "depth", "seldepth", "time", "nodes", "nps", "hashfull", "tbhits",
    "multipv", "currmovenumber", "cpuload", "movesleft",
)


# --------------------------------------------------------------------------
# Locating binaries
# --------------------------------------------------------------------------


def ember_binary() -> Path:
    env = os.environ.get("EMBER_BIN")
    if env:
        return Path(env).expanduser().resolve()
    target = os.environ.get("CARGO_TARGET_DIR")
    target_dir = Path(target) if target else REPO_ROOT / "target"
    if not target_dir.is_absolute():
        target_dir = REPO_ROOT / target_dir
    return target_dir / "release" / "ember"


def stockfish_binary() -> Path:
    return Path(os.environ.get("STOCKFISH_BIN") or "/usr/games/stockfish")


def _missing_reason(path: Path, what: str, hint: str) -> Optional[str]:
    if not path.is_file():
        return f"{what} not found at {path} ({hint})"
    if not os.access(path, os.X_OK):
        return f"{what} at {path} is not executable"
    return None


def ember_missing_reason() -> Optional[str]:
    return _missing_reason(
        ember_binary(),
        "Ember engine binary",
        "build it with `cargo build --release` or set EMBER_BIN",
    )


def stockfish_missing_reason() -> Optional[str]:
    return _missing_reason(
        stockfish_binary(),
        "Stockfish",
        "install it with `apt-get install stockfish` or set STOCKFISH_BIN",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    here = Path(__file__).resolve().parent
    ember_reason = ember_missing_reason()
    sf_reason = stockfish_missing_reason()
    for item in items:
        try:
            inside = Path(str(item.fspath)).resolve().is_relative_to(here)
        except (OSError, ValueError):
            inside = False
        if not inside:
            continue
        if ember_reason:
            item.add_marker(pytest.mark.skip(reason=ember_reason))
        elif sf_reason and item.get_closest_marker("stockfish") is not None:
            item.add_marker(pytest.mark.skip(reason=sf_reason))


# --------------------------------------------------------------------------
# Raw protocol driver
# --------------------------------------------------------------------------


class UciTimeout(AssertionError):
    """The engine did not produce the expected output in time."""


class EngineExited(AssertionError):
    """The engine closed its output (crashed or quit) while output was expected."""


def parse_info(line: str) -> dict:
    """Parse a UCI `info` line into a dict.

    Integer fields map to ints; `score` maps to ("cp"|"mate", int) with an
    optional "score_bound"; `wdl` maps to a (w, d, l) tuple; `pv` to a list of
    move strings; `string` to the rest of the line. Unparseable numbers are
    kept as strings so that assertions on them fail visibly.
    """
    tokens = line.split()
    out: dict = {}
    if not tokens or tokens[0] != "info":
        return out
    i = 1
    n = len(tokens)
    while i < n:
        key = tokens[i]
        i += 1
        if key == "string":
            out["string"] = " ".join(tokens[i:])
            break
        if key in _INT_FIELDS:
            raw = tokens[i] if i < n else ""
            i += 1
            try:
                out[key] = int(raw)
            except ValueError:
                out[key] = raw
        elif key == "score":
            kind = tokens[i] if i < n else ""
            raw = tokens[i + 1] if i + 1 < n else ""
            i += 2
            try:
                out["score"] = (kind, int(raw))
            except ValueError:
                out["score"] = (kind, raw)
            if i < n and tokens[i] in ("lowerbound", "upperbound"):
                out["score_bound"] = tokens[i]
                i += 1
        elif key == "wdl":
            raw = tokens[i : i + 3]
            i += 3
            try:
                out["wdl"] = tuple(int(x) for x in raw)
            except ValueError:
                out["wdl"] = tuple(raw)
        elif key in ("pv", "refutation", "currline"):
            moves = []
            while i < n and tokens[i] not in INFO_KEYWORDS:
                moves.append(tokens[i])
                i += 1
            out[key] = moves
        elif key == "currmove":
            out[key] = tokens[i] if i < n else ""
            i += 1
        else:
            out.setdefault("unknown", []).append(key)
    return out


@dataclass
class SearchResult:
    """Everything the engine printed for one `go`, up to and including `bestmove`."""

    command: str
    lines: list
    bestmove: str
    ponder: Optional[str]
    elapsed: float

    @property
    def info_lines(self) -> list:
        return [line for line in self.lines if line.startswith("info ")]

    @property
    def infos(self) -> list:
        return [parse_info(line) for line in self.info_lines]

    @property
    def search_infos(self) -> list:
        """Parsed info lines that carry a score (i.e. not `info string` chatter)."""
        return [info for info in self.infos if "score" in info]


@dataclass
class _Received:
    stamp: float
    line: Optional[str]  # None marks end of output


class UciEngine:
    """Drive a UCI engine over pipes.

    `send(str)` writes the text plus "\\n"; `send(bytes)` writes the bytes exactly
    as given. Output lines are read by a background thread (with a
    `time.perf_counter()` timestamp taken when each line arrives) into a queue,
    so every read takes a timeout and raises `UciTimeout` instead of hanging.
    """

    def __init__(self, path: Union[str, Path], args: Iterable[str] = ()) -> None:
        self.path = str(path)
        self.proc = subprocess.Popen(
            [self.path, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(REPO_ROOT),
        )
        self._queue: "queue.Queue[_Received]" = queue.Queue()
        self._eof = False
        self.last_stamp = 0.0
        self.transcript: collections.deque = collections.deque(maxlen=120)
        self.stderr_tail: collections.deque = collections.deque(maxlen=40)
        self._closed = False
        threading.Thread(target=self._read_stdout, name="uci-stdout", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="uci-stderr", daemon=True).start()

    # ---- background readers ------------------------------------------------

    def _read_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        try:
            for raw in iter(stream.readline, b""):
                stamp = time.perf_counter()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self._queue.put(_Received(stamp, line))
        except (OSError, ValueError):
            pass
        finally:
            self._queue.put(_Received(time.perf_counter(), None))

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        try:
            for raw in iter(stream.readline, b""):
                self.stderr_tail.append(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass

    # ---- diagnostics -------------------------------------------------------

    def describe(self) -> str:
        rc = self.proc.poll()
        state = "running" if rc is None else f"exited with code {rc}"
        recent = "\n".join(self.transcript) or "(nothing)"
        err = "\n".join(self.stderr_tail) or "(nothing)"
        return (
            f"engine {self.path}: {state}\n"
            f"--- last protocol lines (> sent, < received) ---\n{recent}\n"
            f"--- last stderr lines ---\n{err}"
        )

    @staticmethod
    def _shorten(text: str, limit: int = 200) -> str:
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"

    # ---- writing -----------------------------------------------------------

    def send(self, data: Union[str, bytes]) -> None:
        if isinstance(data, str):
            payload = (data + "\n").encode("utf-8")
        else:
            payload = bytes(data)
        self.transcript.append("> " + self._shorten(repr(payload) if isinstance(data, bytes) else data))
        stdin = self.proc.stdin
        assert stdin is not None

        error: list = []

        def write() -> None:
            try:
                stdin.write(payload)
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                error.append(exc)

        if len(payload) <= 4096:
            write()
        else:
            writer = threading.Thread(target=write, name="uci-stdin", daemon=True)
            writer.start()
            writer.join(WRITE_TIMEOUT)
            if writer.is_alive():
                raise UciTimeout(
                    f"engine did not read a {len(payload)}-byte input within {WRITE_TIMEOUT}s\n{self.describe()}"
                )
        if error:
            raise EngineExited(f"could not write to engine ({error[0]!r})\n{self.describe()}")

    # ---- reading -----------------------------------------------------------

    def read_line(self, timeout: float) -> str:
        """Next output line; raises UciTimeout or EngineExited."""
        if self._eof:
            raise EngineExited(f"engine output already closed\n{self.describe()}")
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise UciTimeout(f"no output from engine within {timeout:.2f}s\n{self.describe()}") from None
        if item.line is None:
            self._eof = True
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            raise EngineExited(f"engine closed its output\n{self.describe()}")
        self.last_stamp = item.stamp
        self.transcript.append("< " + self._shorten(item.line))
        return item.line

    def read_until(self, prefix: Union[str, Callable[[str], bool]], timeout: float) -> list:
        """All lines up to and including the first one that starts with `prefix`
        (or, when `prefix` is a callable, the first one for which it returns true)."""
        matches = prefix if callable(prefix) else (lambda line: line.startswith(prefix))
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UciTimeout(
                    f"no line matching {prefix!r} within {timeout:.2f}s\n{self.describe()}"
                )
            try:
                line = self.read_line(remaining)
            except UciTimeout:
                raise UciTimeout(
                    f"no line matching {prefix!r} within {timeout:.2f}s\n{self.describe()}"
                ) from None
            lines.append(line)
            if matches(line):
                return lines

    def expect(self, prefix: Union[str, Callable[[str], bool]], timeout: float) -> str:
        """The first line starting with `prefix` (earlier lines are discarded)."""
        return self.read_until(prefix, timeout)[-1]

    def collect(self, duration: float) -> list:
        """Every line the engine prints during the next `duration` seconds."""
        deadline = time.monotonic() + duration
        lines = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return lines
            try:
                lines.append(self.read_line(remaining))
            except UciTimeout:
                return lines

    def drain(self, quiet: float = 0.2, limit: float = 5.0) -> list:
        """Read until the engine has been silent for `quiet` seconds (at most `limit`)."""
        deadline = time.monotonic() + limit
        lines = []
        while time.monotonic() < deadline:
            try:
                lines.append(self.read_line(min(quiet, max(0.0, deadline - time.monotonic()))))
            except UciTimeout:
                break
        return lines

    # ---- protocol helpers --------------------------------------------------

    def handshake(self, timeout: float = STARTUP_TIMEOUT) -> list:
        """Send `uci`; return the lines up to and including `uciok`."""
        self.send("uci")
        return self.read_until("uciok", timeout)

    def sync(self, timeout: float = READY_TIMEOUT) -> list:
        """Send `isready`; return the lines printed before `readyok`."""
        self.send("isready")
        return self.read_until("readyok", timeout)[:-1]

    def go(self, args: str = "", timeout: float = SEARCH_TIMEOUT) -> SearchResult:
        """Send `go <args>` and wait for `bestmove`."""
        command = f"go {args}".strip()
        start = time.perf_counter()
        self.send(command)
        lines = self.read_until("bestmove", timeout)
        return self.search_result(command, lines, self.last_stamp - start)

    @staticmethod
    def search_result(command: str, lines: list, elapsed: float) -> SearchResult:
        tokens = lines[-1].split()
        bestmove = tokens[1] if len(tokens) > 1 else ""
        ponder = None
        if len(tokens) > 3 and tokens[2] == "ponder":
            ponder = tokens[3]
        return SearchResult(command, lines, bestmove, ponder, elapsed)

    def settle(self) -> list:
        """Stop any running search and wait until the engine is idle and quiet."""
        self.send("stop")
        lines = self.sync(READY_TIMEOUT)
        lines += self.drain(0.3)
        return lines

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = QUIT_TIMEOUT) -> Optional[int]:
        """Send `quit`, wait up to `timeout` seconds, then kill. Returns the exit code."""
        if self._closed:
            return self.proc.returncode
        self._closed = True
        if self.proc.poll() is None:
            try:
                self.send("quit")
            except AssertionError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        return self.proc.returncode


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def ember_path() -> Path:
    reason = ember_missing_reason()
    if reason:
        pytest.skip(reason)
    return ember_binary()


@pytest.fixture
def stockfish_path() -> Path:
    reason = stockfish_missing_reason()
    if reason:
        pytest.skip(reason)
    return stockfish_binary()


@pytest.fixture
def start_engine(ember_path: Path):
    """Factory: start another engine process; all are closed at teardown."""
    started: list = []

    def start() -> UciEngine:
        eng = UciEngine(ember_path)
        started.append(eng)
        return eng

    yield start
    for eng in started:
        eng.close()


@pytest.fixture
def raw_engine(start_engine) -> UciEngine:
    """A freshly started engine that has not received any command yet."""
    return start_engine()


@pytest.fixture
def engine(start_engine) -> UciEngine:
    """An engine that has completed `uci`/`uciok` and `isready`/`readyok`."""
    eng = start_engine()
    eng.handshake(STARTUP_TIMEOUT)
    eng.sync(STARTUP_TIMEOUT)
    return eng


@pytest.fixture
def timeouts():
    """The harness timeouts, for tests that need them explicitly."""

    @dataclass(frozen=True)
    class Timeouts:
        startup: float = STARTUP_TIMEOUT
        ready: float = READY_TIMEOUT
        search: float = SEARCH_TIMEOUT
        quit: float = QUIT_TIMEOUT

    return Timeouts()
