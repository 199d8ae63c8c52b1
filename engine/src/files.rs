//! Files that survive a kill at any moment: every file Ember writes (checkpoints, replay
//! shards, `state.json`, metrics, PGN) is written beside its final name and renamed into
//! place after an fsync, so a reader sees the old file or the new one, never part of one.
//! A writer killed mid-way leaves a temporary file, which [`sweep_temporaries`] removes
//! once its process is gone. Reads of files a user hands in are bounded.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that readers see either the old file or the new one:
/// a temporary file beside it (see [`temp_path`]), flushed to disk, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = temp_path(path)?;
    let result = (|| -> Result<()> {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        rename_durably(f, &tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes `file` (written at `from`) to disk, renames it to `to` and flushes the folder,
/// so that the new name survives a power cut.
pub fn rename_durably(file: File, from: &Path, to: &Path) -> Result<()> {
    file.sync_all()
        .with_context(|| format!("flushing {}", from.display()))?;
    drop(file);
    std::fs::rename(from, to)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    sync_dir(parent(to));
    Ok(())
}

/// Flushes a folder's entries (renames, removals) to disk; best effort.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temporary file [`write_atomic`] writes before renaming it to `path`:
/// `.NAME.PID.tmp` beside it.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    Ok(dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Who else may be writing into a folder when its temporary files are swept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// The caller holds the folder exclusively (a locked run folder): every temporary
    /// file in it is left by a writer that is gone.
    Exclusive,
    /// Other processes may be writing (the shared models folder): only temporaries whose
    /// writer is no longer running are removed. Call it before this process writes there:
    /// a temporary carrying this process's own id (a reused id) is stale too.
    DeadWriters,
}

/// Removes the temporary files [`write_atomic`] left in `dir` (a process killed in the
/// middle of a write), as `sweep` allows. Returns the names removed.
pub fn sweep_temporaries(dir: &Path, sweep: Sweep) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let writer_alive = pid != std::process::id() && crate::sys::process_alive(pid);
        if sweep == Sweep::DeadWriters && writer_alive {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// Largest opening book (`--openings`) read: 64 MB is about a million EPD positions.
pub const MAX_BOOK_BYTES: u64 = 64 << 20;
/// Largest JSON file of a run folder read (`config.json`, `state.json`, the exchange's
/// records).
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Largest `metrics.jsonl` read: a line is about 2 KB, so millions of iterations.
pub const MAX_METRICS_BYTES: u64 = 1 << 30;
/// Largest replay shard, or object of the exchange, read.
pub const MAX_SHARD_BYTES: u64 = 4 << 30;

/// [`read_bounded`] as UTF-8 text.
pub fn read_bounded_text(path: &Path, limit: u64, what: &str) -> Result<String> {
    String::from_utf8(read_bounded(path, limit, what)?)
        .map_err(|_| anyhow!("{} is not UTF-8 text, not {what}", path.display()))
}

/// Reads `what` (e.g. "a checkpoint") from `path`, refusing what is not a regular file
/// (a directory, `/dev/zero`, a FIFO) or is larger than `limit` bytes, with an error
/// naming the file.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("{shown} does not exist"),
        _ => anyhow!("{shown} cannot be read: {e}"),
    })?;
    if meta.is_dir() {
        bail!("{shown} is a directory, not {what}");
    }
    if !meta.is_file() {
        bail!("{shown} is not a regular file (a device, pipe or socket), not {what}");
    }
    if meta.len() > limit {
        bail!(
            "{shown} is {} bytes, more than the {limit} {what} may have",
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| anyhow!("{shown} cannot be read: {e}"))?;
    if bytes.len() as u64 > limit {
        bail!("{shown} grew past {limit} bytes while being read");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeping_removes_temporaries_of_dead_writers_or_all_in_an_exclusive_folder() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".best.safetensors.4194999.tmp");
        let live = dir.path().join(".best.safetensors.1.tmp"); // init is always running
        let own = temp_path(&dir.path().join("state.json")).unwrap();
        let other = dir.path().join("best.safetensors");
        for p in [&dead, &live, &own, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        // This process is not writing yet: its own id on a temporary is a stale reuse.
        assert_eq!(sweep_temporaries(dir.path(), Sweep::DeadWriters).len(), 2);
        assert!(!dead.exists() && live.exists() && !own.exists() && other.exists());
        assert_eq!(
            sweep_temporaries(dir.path(), Sweep::Exclusive),
            vec![".best.safetensors.1.tmp".to_string()]
        );
        assert!(!live.exists() && other.exists());
    }

    #[test]
    fn bounded_reads_refuse_directories_devices_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            |p: &Path, limit| format!("{:#}", read_bounded(p, limit, "a test file").unwrap_err());
        assert!(err(dir.path(), 10).contains("is a directory"));
        assert!(err(Path::new("/dev/zero"), 10).contains("not a regular file"));
        let big = dir.path().join("big");
        std::fs::write(&big, [0u8; 11]).unwrap();
        assert!(err(&big, 10).contains("more than the 10"));
        assert_eq!(read_bounded(&big, 11, "a test file").unwrap().len(), 11);
    }
}
