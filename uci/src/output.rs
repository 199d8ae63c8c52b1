//! The engine's only way to write to the GUI, and the log of the conversation. A line
//! goes out whole, flushed at once, from whichever thread (input or search) has something
//! to say. A closed stdout (the GUI went away) is ignored here; the input loop ends on end
//! of input.
//!
//! The log (`LogFile`, lc0's and Stockfish's debug log): every line the engine reads
//! ([`log_input`], called once per line by the input loop) and every line it writes
//! ([`emit`]), appended in the order they happened, each as
//! `2026-12-03 06:01:02.345 >> uci` (in to the engine) or `... << uciok` (out), the time
//! in UTC to the millisecond. Writing to the log never stops the engine: a failed write
//! is reported once on stderr and the log stays on.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The open log, if any. A line out is logged while stdout is still held, so that the log
/// keeps the order in which lines went out; reading a line never waits for stdout.
static LOG: Mutex<Option<Log>> = Mutex::new(None);

struct Log {
    file: File,
    path: String,
    /// A write has failed (reported once).
    failed: bool,
}

impl Log {
    fn write(&mut self, direction: &str, line: &str) {
        let entry = format!("{} {direction} {line}\n", utc_timestamp(SystemTime::now()));
        if let Err(e) = self.file.write_all(entry.as_bytes()) {
            if !self.failed {
                self.failed = true;
                eprintln!("ember: writing to the log file {} failed: {e}", self.path);
            }
        }
    }
}

fn log_lock() -> std::sync::MutexGuard<'static, Option<Log>> {
    // A panic while the lock was held leaves the log as usable as before.
    LOG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `line` and a newline to stdout and flushes; logs it as going out.
pub fn emit(line: &str) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    if let Some(log) = log_lock().as_mut() {
        log.write("<<", line);
    }
}

/// Logs a line the engine read (as the input loop decoded it).
pub fn log_input(line: &str) {
    if let Some(log) = log_lock().as_mut() {
        log.write(">>", line);
    }
}

/// Logs to `path` from now on (appending; the file is created if missing), or stops
/// logging when `path` is empty. A file that cannot be opened is an error and the log
/// stays as it was.
pub fn set_log_file(path: &str) -> std::io::Result<()> {
    if path.is_empty() {
        *log_lock() = None;
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *log_lock() = Some(Log {
        file,
        path: path.to_string(),
        failed: false,
    });
    Ok(())
}

/// `time` as `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub fn utc_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// (year, month, day) of the day `days` after 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_time_to_the_millisecond() {
        let at = |secs: u64, millis: u64| {
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01 00:00:00.000");
        // 2000-02-29 (a leap day of a century year) 23:59:59.999.
        assert_eq!(at(951_868_799, 999), "2000-02-29 23:59:59.999");
        assert_eq!(at(1_796_277_662, 345), "2026-12-03 06:01:02.345");
    }
}
