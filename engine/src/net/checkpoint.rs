//! Checkpoints: safetensors files with header metadata naming the format, the
//! architecture and a checksum of the tensors. Reading is bounded and checks before it
//! allocates: the file must be a regular file of at most [`MAX_CHECKPOINT_BYTES`], the
//! architecture fields must lie in [`NetConfig::LIMITS`], and every tensor's name, dtype
//! and shape must match the declared architecture before a network is built, so no file
//! can make a process allocate more than the file itself holds. Writing is atomic
//! ([`crate::files::write_atomic`]), so a kill at any moment leaves the previous file intact.

use super::{NetConfig, VALUE_CHANNELS, VALUE_HIDDEN};
use crate::encoding::{INPUT_PLANES, POLICY_SIZE};
use crate::files::read_bounded;
use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT_NAME: &str = "ember-network";
pub const FORMAT_VERSION: &str = "1";
pub const VALUE_HEAD: &str = "wdl";
/// The largest checkpoint file read (a 1024x64 network is about 2.5 GB; Ember's presets
/// are far below).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;
/// Metadata field holding the checksum of the tensors (see [`tensor_checksum`]).
pub const CHECKSUM_FIELD: &str = "checksum";

/// Metadata field giving the hidden units of the residual blocks' squeeze-and-excitation
/// units ([`NetConfig::se_channels`]); a checkpoint without it has plain blocks.
pub const SE_FIELD: &str = "se_channels";

/// Metadata field saying the network has the reply head (`1`; [`NetConfig::reply_head`]);
/// a checkpoint without it has none.
pub const REPLY_FIELD: &str = "reply_head";

/// Metadata field saying the network has the moves-left head (`1`;
/// [`NetConfig::moves_left_head`]); a checkpoint without it has none.
pub const MOVES_LEFT_FIELD: &str = "moves_left_head";

/// Metadata field naming the run that trained the network (`runs/NAME`).
pub const RUN_FIELD: &str = "run";

/// Longest run name a loaded network keeps; the rest of a longer field is dropped.
pub const MAX_RUN_NAME: usize = 64;

/// Reads a checkpoint file, refusing what is not a regular file or is larger than
/// [`MAX_CHECKPOINT_BYTES`] (a directory, `/dev/zero`, a FIFO) with an error naming it.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    read_bounded(path, MAX_CHECKPOINT_BYTES, "a checkpoint")
}

/// The metadata a checkpoint of `config` carries (without its checksum, which
/// [`serialize`] adds).
pub fn metadata(config: NetConfig, iteration: u64) -> HashMap<String, String> {
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("filters".to_string(), config.filters.to_string()),
        ("blocks".to_string(), config.blocks.to_string()),
        ("input_planes".to_string(), INPUT_PLANES.to_string()),
        ("policy_size".to_string(), POLICY_SIZE.to_string()),
        ("value_head".to_string(), VALUE_HEAD.to_string()),
        ("value_channels".to_string(), VALUE_CHANNELS.to_string()),
        ("value_hidden".to_string(), VALUE_HIDDEN.to_string()),
        ("iteration".to_string(), iteration.to_string()),
    ]);
    // Named only when present, so a plain network's file is what it always was.
    if config.se_channels > 0 {
        meta.insert(SE_FIELD.to_string(), config.se_channels.to_string());
    }
    if config.reply_head {
        meta.insert(REPLY_FIELD.to_string(), "1".to_string());
    }
    if config.moves_left_head {
        meta.insert(MOVES_LEFT_FIELD.to_string(), "1".to_string());
    }
    meta
}

/// CRC-32 over every tensor in name order: its name, its shape (u64 little-endian each)
/// and its raw bytes. Written as `crc32:XXXXXXXX` into the [`CHECKSUM_FIELD`].
pub fn tensor_checksum<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [u8])>,
) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = crc32fast::Hasher::new();
    for (name, shape, data) in sorted {
        h.update(name.as_bytes());
        h.update(&[0]);
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(data);
    }
    format!("crc32:{:08x}", h.finalize())
}

/// Serialises tensors (f32, any device) with metadata and their checksum into
/// safetensors bytes.
pub fn serialize(tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let host: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let v: Vec<f32> = t
                .to_device(&Device::Cpu)?
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Ok((n.clone(), t.dims().to_vec(), bytes))
        })
        .collect::<Result<_>>()?;
    let mut meta = meta;
    meta.insert(
        CHECKSUM_FIELD.to_string(),
        tensor_checksum(
            host.iter()
                .map(|(n, s, b)| (n.as_str(), s.as_slice(), b.as_slice())),
        ),
    );
    let views = host
        .iter()
        .map(|(n, shape, bytes)| {
            Ok((
                n.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// Reads the header metadata of safetensors bytes (`origin` names them in errors).
/// The header length is bounded by the safetensors reader (100 MB) and by the bytes given.
pub fn read_metadata(bytes: &[u8], origin: &str) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        anyhow!("{origin} is not a readable safetensors file (corrupt or truncated): {e}")
    })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// A parsed checkpoint: its metadata and tensors, checksum verified.
pub struct Checkpoint<'a> {
    pub origin: String,
    pub meta: HashMap<String, String>,
    tensors: SafeTensors<'a>,
}

impl<'a> Checkpoint<'a> {
    /// Parses safetensors bytes and verifies the [`CHECKSUM_FIELD`] when the file has
    /// one (files written before checksums existed have none).
    pub fn parse(bytes: &'a [u8], origin: &str) -> Result<Checkpoint<'a>> {
        let meta = read_metadata(bytes, origin)?;
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow!("{origin} is corrupt or truncated: {e}"))?;
        if let Some(want) = meta.get(CHECKSUM_FIELD) {
            let list = tensors.tensors();
            let got = tensor_checksum(list.iter().map(|(n, v)| (n.as_str(), v.shape(), v.data())));
            if *want != got {
                bail!(
                    "{origin}: the tensors do not match metadata field `{CHECKSUM_FIELD}` ({want}, computed {got}): \
the file is corrupt"
                );
            }
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            meta,
            tensors,
        })
    }

    /// A metadata field, or an error naming it.
    pub fn field(&self, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{}: metadata field `{key}` is missing", self.origin))
    }

    /// Names and shapes of the tensors the file holds, sorted by name.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<_> = self
            .tensors
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec()))
            .collect();
        out.sort();
        out
    }

    /// The f32 tensor `name`, which must have `shape` (when given) and hold only finite values.
    pub fn f32(&self, name: &str, shape: Option<&[usize]>) -> Result<(Vec<usize>, Vec<f32>)> {
        let origin = &self.origin;
        let view = self
            .tensors
            .tensor(name)
            .map_err(|_| anyhow!("{origin}: tensor `{name}` is missing"))?;
        if view.dtype() != Dtype::F32 {
            bail!(
                "{origin}: tensor `{name}` has dtype {:?}, expected F32",
                view.dtype()
            );
        }
        if let Some(shape) = shape {
            if view.shape() != shape {
                bail!(
                    "{origin}: tensor `{name}` has shape {:?}, expected {:?}",
                    view.shape(),
                    shape
                );
            }
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if data.iter().any(|x| !x.is_finite()) {
            bail!("{origin}: tensor `{name}` holds NaN or infinite values");
        }
        Ok((view.shape().to_vec(), data))
    }
}

/// The architecture a checkpoint declares, after checking its format fields and that
/// `filters` and `blocks` lie within [`NetConfig::LIMITS`].
pub fn declared_config(meta: &HashMap<String, String>, origin: &str) -> Result<NetConfig> {
    let field = |k: &str| {
        meta.get(k)
            .ok_or_else(|| anyhow!("{origin}: metadata field `{k}` is missing"))
    };
    let format = field("format")?;
    if format != FORMAT_NAME {
        bail!("{origin}: metadata field `format` is {format:?}, expected {FORMAT_NAME:?}");
    }
    let version = field("format_version")?;
    if version != FORMAT_VERSION {
        bail!("{origin}: metadata field `format_version` is {version}, this build reads {FORMAT_VERSION}");
    }
    for (k, want) in [
        ("input_planes", INPUT_PLANES.to_string()),
        ("policy_size", POLICY_SIZE.to_string()),
        ("value_head", VALUE_HEAD.to_string()),
    ] {
        let got = field(k)?;
        if *got != want {
            bail!("{origin}: metadata field `{k}` is {got}, expected {want}");
        }
    }
    let (filters, blocks) = NetConfig::LIMITS;
    let num = |k: &str, (lo, hi): (usize, usize)| -> Result<usize> {
        let got = field(k)?;
        got.parse::<usize>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| {
                anyhow!("{origin}: metadata field `{k}` is {got:?}, expected a whole number from {lo} to {hi}")
            })
    };
    let se_channels = match meta.get(SE_FIELD) {
        None => 0,
        Some(_) => num(SE_FIELD, (0, NetConfig::MAX_SE_CHANNELS))?,
    };
    let flag = |k: &str| -> Result<bool> {
        match meta.get(k).map(String::as_str) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => bail!("{origin}: metadata field `{k}` is {other:?}, expected 0 or 1"),
        }
    };
    Ok(NetConfig {
        filters: num("filters", filters)?,
        blocks: num("blocks", blocks)?,
        se_channels,
        reply_head: flag(REPLY_FIELD)?,
        moves_left_head: flag(MOVES_LEFT_FIELD)?,
    })
}
