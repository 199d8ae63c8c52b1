//! The engine's only way to write to the GUI: one whole line at a time, flushed at once,
//! from whichever thread (input or search) has something to say. A closed stdout (the
//! GUI went away) is ignored here; the input loop ends on end of input.

use std::io::Write;

/// Writes `line` and a newline to stdout and flushes.
pub fn emit(line: &str) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
