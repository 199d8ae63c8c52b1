//! Checkpoints: safetensors files with header metadata naming the format and the
//! architecture. Loading checks every field against what the caller asked for and says
//! exactly what differs; writing is atomic (temporary file, fsync, rename), so a kill at
//! any moment leaves the previous file intact.

use super::{NetConfig, Network, TensorKind, VALUE_CHANNELS, VALUE_HIDDEN};
use crate::encoding::{INPUT_PLANES, POLICY_SIZE};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub const FORMAT_NAME: &str = "ember-network";
pub const FORMAT_VERSION: &str = "1";
pub const VALUE_HEAD: &str = "wdl";

/// Writes `bytes` to `path` so that readers see either the old file or the new one:
/// a temporary file beside it, flushed to disk, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("flushing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The metadata a checkpoint of `config` carries.
pub fn metadata(config: NetConfig, iteration: u64) -> HashMap<String, String> {
    HashMap::from([
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
    ])
}

/// Serialises tensors (f32, any device) with metadata into safetensors bytes.
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
pub fn read_metadata(bytes: &[u8], origin: &str) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        anyhow!("{origin} is not a readable safetensors file (corrupt or truncated): {e}")
    })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// The architecture a checkpoint declares, after checking its format fields.
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
    let num = |k: &str| -> Result<usize> {
        field(k)?
            .parse()
            .map_err(|_| anyhow!("{origin}: metadata field `{k}` is not a number"))
    };
    Ok(NetConfig {
        filters: num("filters")?,
        blocks: num("blocks")?,
    })
}

impl Network {
    /// Serialises the network (all tensors, f32) with its metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let tensors: Vec<(String, Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, v, _)| (n, v.as_tensor().clone()))
            .collect();
        serialize(&tensors, metadata(self.config, self.iteration))
    }

    /// Saves atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
            .with_context(|| format!("saving network to {}", path.display()))
    }

    /// Loads a checkpoint file. With `expected`, a checkpoint of another architecture
    /// is an error naming the fields that differ.
    pub fn load(path: &Path, expected: Option<NetConfig>, device: &Device) -> Result<Network> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?;
        Network::from_bytes(&bytes, expected, device, &path.display().to_string())
    }

    /// Loads a checkpoint from bytes (`origin` names them in errors).
    pub fn from_bytes(
        bytes: &[u8],
        expected: Option<NetConfig>,
        device: &Device,
        origin: &str,
    ) -> Result<Network> {
        let meta = read_metadata(bytes, origin)?;
        let config = declared_config(&meta, origin)?;
        if let Some(want) = expected {
            let mut diffs = Vec::new();
            if want.filters != config.filters {
                diffs.push(format!(
                    "filters is {} (expected {})",
                    config.filters, want.filters
                ));
            }
            if want.blocks != config.blocks {
                diffs.push(format!(
                    "blocks is {} (expected {})",
                    config.blocks, want.blocks
                ));
            }
            if !diffs.is_empty() {
                bail!("{origin} holds another architecture: {}", diffs.join(", "));
            }
        }
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow!("{origin} is corrupt or truncated: {e}"))?;
        let mut net = Network::new(config, device, 0)?;
        net.iteration = meta
            .get("iteration")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for (name, var, _) in net.named_tensors() {
            let view = st
                .tensor(&name)
                .map_err(|_| anyhow!("{origin}: tensor `{name}` is missing"))?;
            if view.dtype() != Dtype::F32 {
                bail!(
                    "{origin}: tensor `{name}` has dtype {:?}, expected F32",
                    view.dtype()
                );
            }
            if view.shape() != var.as_tensor().dims() {
                bail!(
                    "{origin}: tensor `{name}` has shape {:?}, expected {:?}",
                    view.shape(),
                    var.as_tensor().dims()
                );
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if data.iter().any(|x| !x.is_finite()) {
                bail!("{origin}: tensor `{name}` holds NaN or infinite values");
            }
            var.set(&Tensor::from_vec(data, view.shape(), device)?)?;
        }
        Ok(net)
    }
}

/// Names of tensors that are trained (not batch-norm statistics), for optimiser state.
pub fn is_trainable(kind: TensorKind) -> bool {
    kind != TensorKind::Statistic
}
