//! Replay data on disk and the replay window the trainer samples from.
//!
//! A shard holds the samples of one self-play iteration (`replay/iter-000007.shard`). It
//! is written to `iter-000007.shard.partial`, flushed to disk and renamed on
//! [`ShardWriter::finish`], so a kill during self-play leaves at most a `.partial` file,
//! which readers ignore: a `.shard` file is always complete.
//!
//! Format (little-endian): the 8-byte file magic [`SHARD_MAGIC`], then records, each
//! `RECORD_MAGIC (4) | payload length u32 | CRC32 of the payload u32 | payload`, with the
//! payload `FEN length u8 | FEN | result f32 | root Q f32 | reply u16 | plies left u16 |
//! move count u16 | (policy index u16, probability f32) x count`. The result is the value
//! target for the side to move, in [-1, 1]: the game's result, or a search's Q where
//! deblunder replaced it; the reply is the policy index of the opponent's next move, for
//! the opponent ([`NO_REPLY`] after the game's last move); the plies left are those from
//! the position to the game's end ([`NO_PLIES_LEFT`] for a game stopped at the ply cap).
//! Shards of the second format ([`SHARD_MAGIC_V2`]: no plies left) and the first
//! ([`SHARD_MAGIC_V1`]: results -1, 0 or 1 as an i8, no reply either) are read as they
//! always were, their plies left unknown. Reading never fails on bad data: a record
//! whose checksum or contents are wrong is skipped (the reader resynchronises on the next
//! record magic) and counted, and a record cut short at the end of the file (a torn write)
//! is dropped and counted.

use crate::encoding::{encode_position, PLANES_LEN, POLICY_SIZE};
use crate::game::{fen_of, position_from_fen};
use crate::selfplay::Sample;
use anyhow::{bail, Context, Result};
use rand::Rng;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub const SHARD_MAGIC: &[u8; 8] = b"EMBRPL03";
/// The second format's file magic: no plies left.
pub const SHARD_MAGIC_V2: &[u8; 8] = b"EMBRPL02";
/// The first format's file magic: the result an i8 (-1, 0 or 1), and no reply.
pub const SHARD_MAGIC_V1: &[u8; 8] = b"EMBRPL01";
/// The reply field of a position after which the game ended.
pub const NO_REPLY: u16 = u16::MAX;
/// The plies-left field of a position whose game did not end by itself.
pub const NO_PLIES_LEFT: u16 = u16::MAX;
pub const RECORD_MAGIC: &[u8; 4] = b"\xEErec";
pub const SHARD_EXTENSION: &str = "shard";
pub const PARTIAL_SUFFIX: &str = ".partial";
const RECORD_HEADER: usize = 12;
/// No honest record comes near this (a FEN of at most 255 bytes and at most 218 legal
/// moves); a larger length is corruption.
const MAX_PAYLOAD: usize = 1 + 255 + 4 + 4 + 2 + 2 + 2 + 6 * 512;

/// The shard of self-play iteration `iteration` in `dir`.
pub fn shard_path(dir: &Path, iteration: u64) -> PathBuf {
    dir.join(format!("iter-{iteration:06}.{SHARD_EXTENSION}"))
}

/// Complete shards in `dir`, oldest first (names sort by iteration). A missing folder
/// holds none.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("listing replay folder {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("listing replay folder {}", dir.display()))?
            .path();
        if path.is_file() && path.extension().is_some_and(|e| e == SHARD_EXTENSION) {
            shards.push(path);
        }
    }
    shards.sort();
    Ok(shards)
}

/// What reading shards found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadStats {
    pub shards: usize,
    /// Records read intact.
    pub records: usize,
    /// Records skipped for a bad checksum, header or contents (and shards with a bad file
    /// magic).
    pub skipped_corrupt: usize,
    /// Shards whose last record was cut short.
    pub torn_tail: usize,
    /// Listed shards that were not there (deleted or moved away).
    pub missing: usize,
}

impl std::ops::AddAssign for LoadStats {
    fn add_assign(&mut self, o: LoadStats) {
        self.shards += o.shards;
        self.records += o.records;
        self.skipped_corrupt += o.skipped_corrupt;
        self.torn_tail += o.torn_tail;
        self.missing += o.missing;
    }
}

/// Appends samples to a new shard; the shard appears under its name only on
/// [`ShardWriter::finish`].
pub struct ShardWriter {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    records: usize,
    bytes: u64,
    payload: Vec<u8>,
}

impl ShardWriter {
    /// Starts the shard that will be `path` (written as `path.partial` until finished; an
    /// old partial file of the same name is replaced).
    pub fn create(path: &Path) -> Result<ShardWriter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating replay folder {}", dir.display()))?;
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(PARTIAL_SUFFIX);
        let partial = PathBuf::from(partial);
        let file = File::create(&partial)
            .with_context(|| format!("creating shard {}", partial.display()))?;
        let mut file = BufWriter::new(file);
        file.write_all(SHARD_MAGIC)
            .with_context(|| format!("writing shard {}", partial.display()))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            partial,
            file,
            records: 0,
            bytes: SHARD_MAGIC.len() as u64,
            payload: Vec::new(),
        })
    }

    pub fn append(&mut self, sample: &Sample) -> Result<()> {
        encode_payload(sample, &mut self.payload)?;
        let mut header = [0u8; RECORD_HEADER];
        header[..4].copy_from_slice(RECORD_MAGIC);
        header[4..8].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        header[8..].copy_from_slice(&crc32fast::hash(&self.payload).to_le_bytes());
        self.file
            .write_all(&header)
            .and_then(|_| self.file.write_all(&self.payload))
            .with_context(|| format!("writing shard {}", self.partial.display()))?;
        self.records += 1;
        self.bytes += (RECORD_HEADER + self.payload.len()) as u64;
        Ok(())
    }

    /// Records appended so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes written so far (file magic included): the offset of the next record.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Flushes the shard to disk and gives it its final name; returns that path.
    pub fn finish(self) -> Result<PathBuf> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing shard {}", self.partial.display()))?;
        crate::files::rename_durably(file, &self.partial, &self.path)?;
        Ok(self.path)
    }
}

fn encode_payload(sample: &Sample, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let fen = fen_of(&sample.position);
    if fen.len() > 255 {
        bail!("FEN too long for a replay record: {fen}");
    }
    if sample.visits.len() > u16::MAX as usize {
        bail!(
            "visit distribution of {} moves is too long for a replay record",
            sample.visits.len()
        );
    }
    out.push(fen.len() as u8);
    out.extend_from_slice(fen.as_bytes());
    if !(sample.result.is_finite() && (-1.0..=1.0).contains(&sample.result)) {
        bail!("value target {} is not in [-1, 1]", sample.result);
    }
    out.extend_from_slice(&sample.result.to_le_bytes());
    out.extend_from_slice(&sample.root_q.to_le_bytes());
    match sample.reply {
        Some(r) if r as usize >= POLICY_SIZE => bail!("reply index {r} is not a policy index"),
        r => out.extend_from_slice(&r.unwrap_or(NO_REPLY).to_le_bytes()),
    }
    match sample.plies_left {
        Some(NO_PLIES_LEFT) => bail!("plies left {NO_PLIES_LEFT} is the unknown marker"),
        p => out.extend_from_slice(&p.unwrap_or(NO_PLIES_LEFT).to_le_bytes()),
    }
    out.extend_from_slice(&(sample.visits.len() as u16).to_le_bytes());
    for &(index, p) in &sample.visits {
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
    }
    Ok(())
}

/// Why a record could not be read.
enum Bad {
    /// The file ends inside the record.
    Incomplete,
    Corrupt(String),
}

/// A record's payload in the format of file magic version `version` (1, 2 or 3).
fn decode_payload(p: &[u8], version: u8) -> std::result::Result<Sample, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = p
            .get(at..at + n)
            .ok_or_else(|| "payload shorter than its fields".to_string())?;
        at += n;
        Ok(s)
    };
    let fen_len = take(1)?[0] as usize;
    let fen = std::str::from_utf8(take(fen_len)?).map_err(|_| "FEN is not UTF-8".to_string())?;
    let position = position_from_fen(fen).map_err(|e| format!("bad FEN {fen:?}: {e}"))?;
    let result = if version == 1 {
        let r = take(1)?[0] as i8;
        if !(-1..=1).contains(&r) {
            return Err(format!("result {r} is not -1, 0 or 1"));
        }
        r as f32
    } else {
        let r = f32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        if !(r.is_finite() && (-1.0..=1.0).contains(&r)) {
            return Err(format!("result {r} is not in [-1, 1]"));
        }
        r
    };
    let root_q = f32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let reply = if version == 1 {
        None
    } else {
        match u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) {
            NO_REPLY => None,
            r if (r as usize) < POLICY_SIZE => Some(r),
            r => return Err(format!("reply index {r} is not a policy index")),
        }
    };
    let plies_left = if version < 3 {
        None
    } else {
        match u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) {
            NO_PLIES_LEFT => None,
            p => Some(p),
        }
    };
    let count = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
    let mut policy = Vec::with_capacity(count);
    for _ in 0..count {
        let index = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
        let prob = f32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        if index as usize >= POLICY_SIZE || !prob.is_finite() || prob < 0.0 {
            return Err(format!("policy entry ({index}, {prob}) out of range"));
        }
        policy.push((index, prob));
    }
    if at != p.len() {
        return Err("payload longer than its fields".to_string());
    }
    if !root_q.is_finite() {
        return Err("root Q is not finite".to_string());
    }
    Ok(Sample {
        position,
        visits: policy,
        result,
        root_q,
        reply,
        plies_left,
    })
}

/// The record at the start of `bytes` and its length on disk.
fn read_record(bytes: &[u8], version: u8) -> std::result::Result<(Sample, usize), Bad> {
    if bytes.len() < RECORD_HEADER {
        return if RECORD_MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            Err(Bad::Incomplete)
        } else {
            Err(Bad::Corrupt("bad record magic".into()))
        };
    }
    if &bytes[..4] != RECORD_MAGIC {
        return Err(Bad::Corrupt("bad record magic".into()));
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(Bad::Corrupt(format!("record length {len} is implausible")));
    }
    let Some(payload) = bytes.get(RECORD_HEADER..RECORD_HEADER + len) else {
        return Err(Bad::Incomplete);
    };
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if crc32fast::hash(payload) != crc {
        return Err(Bad::Corrupt("checksum mismatch".into()));
    }
    let sample = decode_payload(payload, version).map_err(Bad::Corrupt)?;
    Ok((sample, RECORD_HEADER + len))
}

/// Reads the samples of a shard's bytes (`origin` names it in warnings).
pub fn parse_shard(bytes: &[u8], origin: &str) -> (Vec<Sample>, LoadStats) {
    let mut stats = LoadStats {
        shards: 1,
        ..LoadStats::default()
    };
    let mut samples = Vec::new();
    let magic = &bytes[..bytes.len().min(SHARD_MAGIC.len())];
    let version = match magic {
        m if m == SHARD_MAGIC => 3,
        m if m == SHARD_MAGIC_V2 => 2,
        m if m == SHARD_MAGIC_V1 => 1,
        _ => 0,
    };
    if version == 0 {
        if [SHARD_MAGIC, SHARD_MAGIC_V2, SHARD_MAGIC_V1]
            .iter()
            .any(|m| m.starts_with(bytes))
        {
            stats.torn_tail += 1;
        } else {
            log::warn!("{origin}: not an Ember replay shard (bad file magic); skipped");
            stats.skipped_corrupt += 1;
        }
        return (samples, stats);
    }
    let mut pos = SHARD_MAGIC.len();
    while pos < bytes.len() {
        match read_record(&bytes[pos..], version) {
            Ok((sample, used)) => {
                samples.push(sample);
                stats.records += 1;
                pos += used;
            }
            Err(bad) => {
                let next = bytes[pos + 1..]
                    .windows(RECORD_MAGIC.len())
                    .position(|w| w == RECORD_MAGIC);
                match (next, bad) {
                    (Some(skip), bad) => {
                        let why = match bad {
                            Bad::Incomplete => "record runs past the end".to_string(),
                            Bad::Corrupt(why) => why,
                        };
                        log::warn!("{origin}: corrupt record at byte {pos} ({why}); skipped");
                        stats.skipped_corrupt += 1;
                        pos += 1 + skip;
                    }
                    (None, Bad::Incomplete) => {
                        log::warn!(
                            "{origin}: last record cut short at byte {pos} (torn write); dropped"
                        );
                        stats.torn_tail += 1;
                        break;
                    }
                    (None, Bad::Corrupt(why)) => {
                        log::warn!("{origin}: corrupt last record at byte {pos} ({why}); skipped");
                        stats.skipped_corrupt += 1;
                        break;
                    }
                }
            }
        }
    }
    (samples, stats)
}

/// Reads one shard file. Only an unreadable file is an error; bad records are skipped
/// and counted.
pub fn read_shard(path: &Path) -> Result<(Vec<Sample>, LoadStats)> {
    let bytes = crate::files::read_bounded(path, crate::files::MAX_SHARD_BYTES, "a replay shard")
        .context("reading a replay shard")?;
    Ok(parse_shard(&bytes, &path.display().to_string()))
}

/// How many positions the replay window holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WindowSize {
    /// A fixed number of positions.
    Positions(usize),
    /// The positions of the newest K self-play iterations: the window is K times the
    /// positions the newest iteration made, so it grows and shrinks with them.
    Iterations(usize),
}

impl WindowSize {
    /// The capacity in positions when the newest iteration made `newest` positions.
    pub fn capacity(self, newest: usize) -> usize {
        match self {
            WindowSize::Positions(n) => n,
            WindowSize::Iterations(k) => k.saturating_mul(newest).max(1),
        }
    }
}

impl From<usize> for WindowSize {
    fn from(n: usize) -> WindowSize {
        WindowSize::Positions(n)
    }
}

/// The newest `capacity` samples, which training minibatches are drawn from.
pub struct ReplayWindow {
    capacity: usize,
    /// Oldest first.
    samples: VecDeque<EncodedSample>,
}

/// A sample as the window keeps it: the position encoded once, when it enters the window
/// (one byte per plane and square; every plane is 0 or 1), so drawing a minibatch never
/// parses or encodes a position again.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedSample {
    /// `PLANES_LEN` bytes in the encoding's plane-major layout.
    pub planes: Box<[u8]>,
    /// The search's visit distribution: (policy index, probability).
    pub visits: Box<[(u16, f32)]>,
    /// Value target for the side to move: the final result (+1 win, 0 draw, -1 loss), or
    /// a search's Q in [-1, 1] where deblunder replaced it.
    pub result: f32,
    /// The search's value of the position when it was played.
    pub root_q: f32,
    /// The opponent's reply as its policy index for the opponent, when known.
    pub reply: Option<u16>,
    /// Plies from the position to the game's end, when known.
    pub plies_left: Option<u16>,
}

impl EncodedSample {
    pub fn new(sample: &Sample) -> EncodedSample {
        let mut planes = vec![0u8; PLANES_LEN];
        encode_position(&sample.position, &mut planes);
        EncodedSample {
            planes: planes.into_boxed_slice(),
            visits: sample.visits.clone().into_boxed_slice(),
            result: sample.result,
            root_q: sample.root_q,
            reply: sample.reply,
            plies_left: sample.plies_left,
        }
    }
}

impl ReplayWindow {
    pub fn new(capacity: usize) -> ReplayWindow {
        ReplayWindow {
            capacity,
            samples: VecDeque::new(),
        }
    }

    /// Fills a window from the newest complete shards in `dir` (reading only as many as
    /// it needs). A missing folder gives an empty window.
    pub fn load(dir: &Path, size: impl Into<WindowSize>) -> Result<(ReplayWindow, LoadStats)> {
        let names: Vec<String> = list_shards(dir)?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        ReplayWindow::load_listed(dir, &names, size)
    }

    /// Fills a window from the newest of the shards `names` (oldest first) in `dir`,
    /// reading only as many as it needs. A listed shard that is not there is skipped
    /// with a warning naming it and counted in [`LoadStats::missing`].
    pub fn load_listed(
        dir: &Path,
        names: &[String],
        size: impl Into<WindowSize>,
    ) -> Result<(ReplayWindow, LoadStats)> {
        ReplayWindow::fill_newest(names, size.into(), |name| {
            let path = dir.join(name);
            if !path.exists() {
                log::warn!(
                    "replay shard {} is listed but missing; its positions are not trained on",
                    path.display()
                );
                return Ok(None);
            }
            read_shard(&path).map(Some)
        })
    }

    /// Fills a window from the newest of `names` (oldest first), each read by `read`
    /// (`None`: missing, counted in [`LoadStats::missing`]), reading only as many as the
    /// window holds. Under [`WindowSize::Iterations`] the newest shard sets the capacity.
    pub fn fill_newest(
        names: &[String],
        size: WindowSize,
        mut read: impl FnMut(&str) -> Result<Option<(Vec<Sample>, LoadStats)>>,
    ) -> Result<(ReplayWindow, LoadStats)> {
        let mut stats = LoadStats::default();
        let mut newest_first: Vec<Vec<Sample>> = Vec::new();
        let mut capacity = None;
        let mut held = 0;
        for name in names.iter().rev() {
            if capacity.is_some_and(|c| held >= c) {
                break;
            }
            let Some((samples, s)) = read(name)? else {
                stats.missing += 1;
                continue;
            };
            stats += s;
            capacity.get_or_insert_with(|| size.capacity(samples.len()));
            held += samples.len();
            newest_first.push(samples);
        }
        let mut window = ReplayWindow::new(capacity.unwrap_or_else(|| size.capacity(0)));
        for samples in newest_first.iter().rev() {
            window.push_samples(samples);
        }
        Ok((window, stats))
    }

    /// Sets the capacity, dropping the oldest samples beyond it.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.drop_oldest_beyond_capacity();
    }

    fn drop_oldest_beyond_capacity(&mut self) {
        let excess = self.samples.len().saturating_sub(self.capacity);
        self.samples.drain(..excess);
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds newer samples (encoding each once), dropping the oldest beyond the capacity.
    pub fn push_samples<'s>(&mut self, samples: impl IntoIterator<Item = &'s Sample>) {
        self.samples
            .extend(samples.into_iter().map(EncodedSample::new));
        self.drop_oldest_beyond_capacity();
    }

    /// Adds the samples of a finished shard file (the newest data).
    pub fn push_shard(&mut self, path: &Path) -> Result<LoadStats> {
        let (samples, stats) = read_shard(path)?;
        self.push_samples(&samples);
        Ok(stats)
    }

    /// `batch_size` samples drawn uniformly with replacement (none from an empty window).
    pub fn sample_batch<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        batch_size: usize,
    ) -> Vec<&EncodedSample> {
        if self.samples.is_empty() {
            return Vec::new();
        }
        (0..batch_size)
            .map(|_| &self.samples[rng.random_range(0..self.samples.len())])
            .collect()
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &EncodedSample> {
        self.samples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::sample_positions;
    use crate::encoding::move_to_index;
    use rand::{rngs::StdRng, SeedableRng};
    use shakmaty::Position;

    /// Samples whose root Q is `tag + i`, so a test can tell which ones survived.
    fn samples(n: usize, tag: f32, seed: u64) -> Vec<Sample> {
        let mut rng = StdRng::seed_from_u64(seed);
        sample_positions(3 * n, seed)
            .into_iter()
            .filter(|p| !p.legal_moves().is_empty())
            .take(n)
            .enumerate()
            .map(|(i, position)| {
                let moves = position.legal_moves();
                let weights: Vec<f32> = moves.iter().map(|_| rng.random_range(0.0..1.0)).collect();
                let sum: f32 = weights.iter().sum();
                let policy = moves
                    .iter()
                    .zip(&weights)
                    .map(|(m, w)| (move_to_index(m, position.turn()) as u16, w / sum))
                    .collect();
                Sample {
                    position,
                    visits: policy,
                    result: [-1.0, 0.0, 1.0][i % 3],
                    root_q: tag + i as f32,
                    reply: (i % 4 != 3).then_some((i * 37 % POLICY_SIZE) as u16),
                    plies_left: (i % 5 != 4).then_some((i * 7 + 1) as u16),
                }
            })
            .collect()
    }

    fn assert_same(a: &Sample, b: &Sample) {
        assert_eq!(fen_of(&a.position), fen_of(&b.position));
        assert_eq!(a.visits, b.visits);
        assert_eq!(a.result, b.result);
        assert_eq!(a.root_q, b.root_q);
        assert_eq!(a.reply, b.reply);
        assert_eq!(a.plies_left, b.plies_left);
    }

    /// Writes a shard; returns its path and the byte offset of each record.
    fn write_shard(path: &Path, samples: &[Sample]) -> (PathBuf, Vec<u64>) {
        let mut w = ShardWriter::create(path).unwrap();
        let mut offsets = Vec::new();
        for s in samples {
            offsets.push(w.bytes_written());
            w.append(s).unwrap();
        }
        (w.finish().unwrap(), offsets)
    }

    #[test]
    fn a_listed_shard_that_is_missing_is_counted_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        write_shard(&shard_path(dir.path(), 1), &samples(5, 0.0, 1));
        write_shard(&shard_path(dir.path(), 3), &samples(7, 0.0, 2));
        let names: Vec<String> = [1, 2, 3]
            .iter()
            .map(|i| format!("iter-{i:06}.shard"))
            .collect();
        let (window, stats) = ReplayWindow::load_listed(dir.path(), &names, 100).unwrap();
        assert_eq!(window.len(), 12);
        assert_eq!((stats.shards, stats.missing), (2, 1));
        // An unlisted shard in the folder is not read.
        let (window, stats) = ReplayWindow::load_listed(dir.path(), &names[..1], 100).unwrap();
        assert_eq!((window.len(), stats.missing), (5, 0));
    }

    #[test]
    fn samples_round_trip_through_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let original = samples(20, 0.0, 1);
        let (path, _) = write_shard(&shard_path(dir.path(), 3), &original);
        assert_eq!(path, dir.path().join("iter-000003.shard"));
        let (read, stats) = read_shard(&path).unwrap();
        assert_eq!(
            stats,
            LoadStats {
                shards: 1,
                records: 20,
                skipped_corrupt: 0,
                torn_tail: 0,
                missing: 0,
            }
        );
        assert_eq!(read.len(), original.len());
        for (a, b) in original.iter().zip(&read) {
            assert_same(a, b);
        }
    }

    #[test]
    fn fractional_value_targets_round_trip_and_out_of_range_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut original = samples(6, 0.0, 2);
        for (i, s) in original.iter_mut().enumerate() {
            s.result = -0.9 + 0.33 * i as f32;
        }
        let (path, _) = write_shard(&shard_path(dir.path(), 1), &original);
        let (read, stats) = read_shard(&path).unwrap();
        assert_eq!(stats.records, 6);
        for (a, b) in original.iter().zip(&read) {
            assert_same(a, b);
        }
        let mut w = ShardWriter::create(&shard_path(dir.path(), 2)).unwrap();
        original[0].result = 1.5;
        let err = w.append(&original[0]).unwrap_err();
        assert!(err.to_string().contains("not in [-1, 1]"), "{err}");
    }

    /// A record of an older format: the first (`version` 1: the result a byte, no reply)
    /// or the second (2: no plies left).
    fn old_record(s: &Sample, version: u8) -> Vec<u8> {
        let fen = fen_of(&s.position);
        let mut p = vec![fen.len() as u8];
        p.extend_from_slice(fen.as_bytes());
        if version == 1 {
            p.push(s.result as i8 as u8);
        } else {
            p.extend_from_slice(&s.result.to_le_bytes());
        }
        p.extend_from_slice(&s.root_q.to_le_bytes());
        if version == 2 {
            p.extend_from_slice(&s.reply.unwrap_or(NO_REPLY).to_le_bytes());
        }
        p.extend_from_slice(&(s.visits.len() as u16).to_le_bytes());
        for &(i, q) in &s.visits {
            p.extend_from_slice(&i.to_le_bytes());
            p.extend_from_slice(&q.to_le_bytes());
        }
        let mut r = RECORD_MAGIC.to_vec();
        r.extend_from_slice(&(p.len() as u32).to_le_bytes());
        r.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        r.extend_from_slice(&p);
        r
    }

    #[test]
    fn shards_of_the_first_format_still_load() {
        let mut original = samples(9, 0.0, 3);
        for s in &mut original {
            s.reply = None;
            s.plies_left = None;
        }
        let mut bytes = SHARD_MAGIC_V1.to_vec();
        for s in &original {
            bytes.extend(old_record(s, 1));
        }
        let (read, stats) = parse_shard(&bytes, "v1");
        assert_eq!((stats.records, stats.skipped_corrupt), (9, 0));
        for (a, b) in original.iter().zip(&read) {
            assert_same(a, b);
        }
        // The same bytes under the new magic are read as the new format: every record
        // is then refused, none misread.
        bytes[..8].copy_from_slice(SHARD_MAGIC);
        let (read, stats) = parse_shard(&bytes, "v3");
        assert!(read.is_empty());
        assert_eq!(stats.skipped_corrupt, 9);
    }

    #[test]
    fn shards_of_the_second_format_load_with_the_plies_left_unknown() {
        let original = samples(12, 0.0, 4);
        let mut bytes = SHARD_MAGIC_V2.to_vec();
        for s in &original {
            bytes.extend(old_record(s, 2));
        }
        let (read, stats) = parse_shard(&bytes, "v2");
        assert_eq!((stats.records, stats.skipped_corrupt), (12, 0));
        for (a, b) in original.iter().zip(&read) {
            assert_eq!(b.plies_left, None);
            assert_same(
                &Sample {
                    plies_left: None,
                    ..a.clone()
                },
                b,
            );
        }
        // Under the third format's magic the same records are refused, none misread.
        bytes[..8].copy_from_slice(SHARD_MAGIC);
        let (read, stats) = parse_shard(&bytes, "v3");
        assert!(read.is_empty());
        assert_eq!(stats.skipped_corrupt, 12);
    }

    #[test]
    fn plies_left_round_trip_and_the_unknown_marker_is_refused_as_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut original = samples(4, 0.0, 5);
        for (s, p) in original
            .iter_mut()
            .zip([Some(1), None, Some(NO_PLIES_LEFT - 1), Some(0)])
        {
            s.plies_left = p;
        }
        let (path, _) = write_shard(&shard_path(dir.path(), 1), &original);
        let (read, _) = read_shard(&path).unwrap();
        let got: Vec<Option<u16>> = read.iter().map(|s| s.plies_left).collect();
        assert_eq!(got, [Some(1), None, Some(NO_PLIES_LEFT - 1), Some(0)]);
        let encoded = EncodedSample::new(&read[2]);
        assert_eq!(encoded.plies_left, Some(NO_PLIES_LEFT - 1));
        let mut w = ShardWriter::create(&shard_path(dir.path(), 2)).unwrap();
        original[0].plies_left = Some(NO_PLIES_LEFT);
        assert!(w.append(&original[0]).is_err());
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_earlier_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let original = samples(6, 0.0, 2);
        let (path, _) = write_shard(&shard_path(dir.path(), 1), &original);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (read, stats) = read_shard(&path).unwrap();
        assert_eq!(
            (stats.records, stats.torn_tail, stats.skipped_corrupt),
            (5, 1, 0)
        );
        for (a, b) in original.iter().zip(&read) {
            assert_same(a, b);
        }
    }

    #[test]
    fn a_record_torn_inside_its_header_is_dropped_too() {
        let dir = tempfile::tempdir().unwrap();
        let original = samples(4, 0.0, 3);
        let (path, offsets) = write_shard(&shard_path(dir.path(), 1), &original);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..offsets[3] as usize + 6]).unwrap();
        let (read, stats) = read_shard(&path).unwrap();
        assert_eq!(
            (read.len(), stats.torn_tail, stats.skipped_corrupt),
            (3, 1, 0)
        );
    }

    #[test]
    fn a_flipped_byte_in_a_middle_record_skips_only_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let original = samples(8, 0.0, 4);
        let (path, offsets) = write_shard(&shard_path(dir.path(), 1), &original);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offsets[3] as usize + RECORD_HEADER + 5] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let (read, stats) = read_shard(&path).unwrap();
        assert_eq!(
            (stats.records, stats.skipped_corrupt, stats.torn_tail),
            (7, 1, 0)
        );
        let kept: Vec<&Sample> = original
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, s)| s)
            .collect();
        for (a, b) in kept.into_iter().zip(&read) {
            assert_same(a, b);
        }
    }

    #[test]
    fn a_corrupt_record_length_resynchronises_on_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let original = samples(6, 0.0, 5);
        let (path, offsets) = write_shard(&shard_path(dir.path(), 1), &original);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offsets[2] as usize + 5] ^= 0x7f;
        std::fs::write(&path, &bytes).unwrap();
        let (read, stats) = read_shard(&path).unwrap();
        assert_eq!(
            (stats.records, stats.skipped_corrupt, stats.torn_tail),
            (5, 1, 0)
        );
        assert_same(&read[2], &original[3]);
    }

    #[test]
    fn a_file_that_is_not_a_shard_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(shard_path(dir.path(), 1), b"{\"json\": \"not a shard\"}").unwrap();
        let (window, stats) = ReplayWindow::load(dir.path(), 10).unwrap();
        assert_eq!((window.len(), stats.skipped_corrupt), (0, 1));
    }

    #[test]
    fn the_window_keeps_only_the_newest_samples() {
        let dir = tempfile::tempdir().unwrap();
        for it in 1..=3u64 {
            write_shard(
                &shard_path(dir.path(), it),
                &samples(5, 100.0 * it as f32, it),
            );
        }
        let (window, stats) = ReplayWindow::load(dir.path(), 7).unwrap();
        assert_eq!(window.len(), 7);
        assert_eq!(stats.shards, 2, "the oldest shard is not needed");
        let tags: Vec<f32> = window.iter().map(|s| s.root_q).collect();
        assert_eq!(tags, vec![203.0, 204.0, 300.0, 301.0, 302.0, 303.0, 304.0]);
    }

    #[test]
    fn a_window_of_k_iterations_is_k_times_the_newest_shard() {
        let dir = tempfile::tempdir().unwrap();
        for (it, n) in [(1u64, 6), (2, 6), (3, 4)] {
            write_shard(
                &shard_path(dir.path(), it),
                &samples(n, 100.0 * it as f32, it),
            );
        }
        // Two iterations of 4 positions (the newest shard's): 8 positions, the newest.
        let (window, _) = ReplayWindow::load(dir.path(), WindowSize::Iterations(2)).unwrap();
        assert_eq!(window.capacity(), 8);
        let tags: Vec<f32> = window.iter().map(|s| s.root_q).collect();
        assert_eq!(
            tags,
            vec![202.0, 203.0, 204.0, 205.0, 300.0, 301.0, 302.0, 303.0]
        );
        assert_eq!(WindowSize::Positions(7).capacity(1000), 7);
        assert_eq!(WindowSize::Iterations(3).capacity(0), 1);

        // A smaller capacity drops the oldest at once; a larger one keeps what is there.
        let mut window = window;
        window.set_capacity(3);
        let tags: Vec<f32> = window.iter().map(|s| s.root_q).collect();
        assert_eq!(tags, vec![301.0, 302.0, 303.0]);
        window.set_capacity(20);
        window.push_samples(&samples(2, 400.0, 4));
        assert_eq!(window.len(), 5);
    }

    #[test]
    fn pushing_past_capacity_drops_the_oldest() {
        let mut window = ReplayWindow::new(4);
        window.push_samples(&samples(3, 0.0, 1));
        window.push_samples(&samples(3, 10.0, 2));
        let tags: Vec<f32> = window.iter().map(|s| s.root_q).collect();
        assert_eq!(tags, vec![2.0, 10.0, 11.0, 12.0]);
    }

    #[test]
    fn a_partial_shard_is_ignored_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        write_shard(&shard_path(dir.path(), 1), &samples(3, 0.0, 1));
        let mut w = ShardWriter::create(&shard_path(dir.path(), 2)).unwrap();
        for s in samples(4, 10.0, 2) {
            w.append(&s).unwrap();
        }
        drop(w); // killed before finish: the data sits in iter-000002.shard.partial
        assert!(dir.path().join("iter-000002.shard.partial").exists());
        let (window, _) = ReplayWindow::load(dir.path(), 100).unwrap();
        assert_eq!(window.len(), 3);

        let path = write_shard(&shard_path(dir.path(), 2), &samples(4, 10.0, 2)).0;
        assert!(!dir.path().join("iter-000002.shard.partial").exists());
        let mut window = window;
        window.push_shard(&path).unwrap();
        assert_eq!(window.len(), 7);
    }

    #[test]
    fn minibatches_are_drawn_from_the_window_with_replacement() {
        let mut window = ReplayWindow::new(100);
        window.push_samples(&samples(5, 0.0, 1));
        let mut rng = StdRng::seed_from_u64(7);
        let batch = window.sample_batch(&mut rng, 64);
        assert_eq!(batch.len(), 64);
        let mut seen = [0usize; 5];
        for s in &batch {
            seen[s.root_q as usize] += 1;
        }
        assert!(
            seen.iter().all(|&c| c > 0),
            "64 draws from 5 samples reach every one: {seen:?}"
        );
        assert!(ReplayWindow::new(10).sample_batch(&mut rng, 8).is_empty());
    }

    #[test]
    fn an_empty_or_missing_folder_gives_an_empty_window() {
        let dir = tempfile::tempdir().unwrap();
        let (window, stats) = ReplayWindow::load(&dir.path().join("replay"), 10).unwrap();
        assert!(window.is_empty());
        assert_eq!(stats, LoadStats::default());
    }
}
