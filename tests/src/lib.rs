//! Fixtures for Ember's end-to-end tests: hostile checkpoint files, and where the
//! release binaries are.
//!
//! [`hostile_checkpoints`] makes files that a careless or malicious user could hand to
//! `ember` (`setoption name WeightsFile`) or the trainer (a run's `best.safetensors`):
//! absurd architectures, a header claiming 10 GB, tensors of the wrong shape or dtype,
//! truncated data, bit flips, broken metadata. Each comes with the words its error must
//! contain. The files are written byte by byte here, in the safetensors layout (an 8-byte
//! little-endian header length, a JSON header, the tensor data), so that they can be
//! broken in ways no well-behaved writer would produce.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One tensor of a checkpoint: name, safetensors dtype name, shape and raw bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A checkpoint taken apart: its metadata and tensors, in file order.
#[derive(Clone, Debug)]
pub struct RawCheckpoint {
    pub metadata: Map<String, Value>,
    pub tensors: Vec<RawTensor>,
}

impl RawCheckpoint {
    /// Takes apart well-formed safetensors bytes.
    pub fn parse(bytes: &[u8]) -> RawCheckpoint {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let data = &bytes[8 + n..];
        let mut metadata = Map::new();
        let mut tensors = Vec::new();
        for (name, v) in header {
            if name == "__metadata__" {
                metadata = v.as_object().unwrap().clone();
                continue;
            }
            let offsets: Vec<usize> = v["data_offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            tensors.push(RawTensor {
                name,
                dtype: v["dtype"].as_str().unwrap().to_string(),
                shape: v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect(),
                data: data[offsets[0]..offsets[1]].to_vec(),
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        RawCheckpoint { metadata, tensors }
    }

    /// Puts it back together, with the checksum recomputed over the tensors (so that a
    /// file broken on purpose fails for the intended reason, not for its checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut meta = self.metadata.clone();
        if meta.contains_key(ember_engine::net::checkpoint::CHECKSUM_FIELD) {
            let sum = ember_engine::net::checkpoint::tensor_checksum(
                self.tensors
                    .iter()
                    .map(|t| (t.name.as_str(), t.shape.as_slice(), t.data.as_slice())),
            );
            meta.insert(
                ember_engine::net::checkpoint::CHECKSUM_FIELD.into(),
                Value::String(sum),
            );
        }
        self.to_bytes_as_is(meta)
    }

    /// Puts it back together with exactly `metadata`.
    pub fn to_bytes_as_is(&self, metadata: Map<String, Value>) -> Vec<u8> {
        let mut header = Map::new();
        header.insert("__metadata__".into(), Value::Object(metadata));
        let mut offset = 0;
        for t in &self.tensors {
            header.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.data.len()]
                }),
            );
            offset += t.data.len();
        }
        let mut json = serde_json::to_vec(&Value::Object(header)).unwrap();
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        with_header(
            &json,
            self.tensors.iter().flat_map(|t| t.data.clone()).collect(),
        )
    }

    fn tensor(&mut self, name: &str) -> &mut RawTensor {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }
}

fn with_header(json: &[u8], data: Vec<u8>) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json);
    out.extend(data);
    out
}

/// A hostile checkpoint: a short name, its bytes, and words its error must contain.
pub struct Hostile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub error: &'static str,
    /// What a reader that expects a 64x3 network may say instead.
    pub or_else: Option<&'static str>,
}

impl Hostile {
    /// Whether an error message says what is wrong with this file.
    pub fn explained_by(&self, message: &str) -> bool {
        message.contains(self.error) || self.or_else.is_some_and(|e| message.contains(e))
    }
}

/// Hostile variants of `good`, a valid checkpoint (with a checksum) of 64x3.
pub fn hostile_checkpoints(good: &[u8]) -> Vec<Hostile> {
    let base = RawCheckpoint::parse(good);
    let with_meta = |key: &str, value: Option<&str>| {
        let mut c = base.clone();
        match value {
            Some(v) => c.metadata.insert(key.into(), Value::String(v.into())),
            None => c.metadata.remove(key),
        };
        c.to_bytes()
    };
    let mut out = Vec::new();
    for (name, field, value) in [
        ("filters-huge", "filters", "100000"),
        ("filters-zero", "filters", "0"),
        ("filters-negative", "filters", "-64"),
        ("blocks-huge", "blocks", "100000"),
        ("blocks-zero", "blocks", "0"),
        ("blocks-negative", "blocks", "-3"),
    ] {
        out.push(Hostile {
            name,
            bytes: with_meta(field, Some(value)),
            error: if field == "filters" {
                "metadata field `filters`"
            } else {
                "metadata field `blocks`"
            },
            or_else: None,
        });
    }
    out.push(Hostile {
        name: "filters-within-limits-but-not-the-tensors",
        bytes: with_meta("filters", Some("1024")),
        error: "has shape [162, 64], expected [162, 1024]",
        or_else: Some("filters is 1024 (expected 64)"),
    });
    out.push(Hostile {
        name: "blocks-within-limits-but-not-the-tensors",
        bytes: with_meta("blocks", Some("64")),
        error: "tensor `tower.3.conv1.weight` is missing",
        or_else: Some("blocks is 64 (expected 3)"),
    });
    out.push(Hostile {
        name: "missing-field",
        bytes: with_meta("blocks", None),
        error: "metadata field `blocks` is missing",
        or_else: None,
    });
    out.push(Hostile {
        name: "iteration-not-a-number",
        bytes: with_meta("iteration", Some("twelve")),
        error: "metadata field `iteration`",
        or_else: None,
    });
    let mut header_10gb = good.to_vec();
    header_10gb[..8].copy_from_slice(&10_000_000_000u64.to_le_bytes());
    out.push(Hostile {
        name: "header-length-10gb",
        bytes: header_10gb,
        error: "not a readable safetensors file",
        or_else: None,
    });
    out.push(Hostile {
        name: "metadata-not-json",
        bytes: with_header(b"{\"__metadata__\": {\"format\": ", vec![0; 64]),
        error: "not a readable safetensors file",
        or_else: None,
    });
    let mut c = base.clone();
    let t = c.tensor("value.fc2.bias");
    t.shape = vec![4];
    t.data.extend_from_slice(&0f32.to_le_bytes());
    out.push(Hostile {
        name: "wrong-shape",
        bytes: c.to_bytes(),
        error: "tensor `value.fc2.bias` has shape [4], expected [3]",
        or_else: None,
    });
    let mut c = base.clone();
    let t = c.tensor("value.fc2.bias");
    t.dtype = "F64".into();
    t.shape = vec![3];
    t.data = [0f64; 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    out.push(Hostile {
        name: "wrong-dtype",
        bytes: c.to_bytes(),
        error: "tensor `value.fc2.bias` has dtype F64",
        or_else: None,
    });
    let mut c = base.clone();
    c.tensors.retain(|t| t.name != "policy.out.bias");
    out.push(Hostile {
        name: "missing-tensor",
        bytes: c.to_bytes(),
        error: "tensor `policy.out.bias` is missing",
        or_else: None,
    });
    let mut c = base.clone();
    c.tensor("value.fc1.bias").data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    out.push(Hostile {
        name: "nan-weights",
        bytes: c.to_bytes(),
        error: "tensor `value.fc1.bias` holds NaN or infinite values",
        or_else: None,
    });
    out.push(Hostile {
        name: "truncated-tensor-data",
        bytes: good[..good.len() - 100].to_vec(),
        error: "corrupt or truncated",
        or_else: None,
    });
    let mut flipped = good.to_vec();
    let at = good.len() - 1000;
    flipped[at] ^= 0x10;
    out.push(Hostile {
        name: "bit-flip",
        bytes: flipped,
        error: "do not match metadata field `checksum`",
        or_else: None,
    });
    out
}

/// A release binary of the workspace (`ember`, `trainer`): `$EMBER_BIN` / `$TRAINER_BIN`
/// if set, else beside this test executable's `target/<profile>/`.
pub fn binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --release --workspace) or set {var}",
        path.display()
    );
    path
}

/// Every file under `root` (by path relative to it) with its bytes, except run folders'
/// `lock` files: what a refused command must leave exactly as it was.
pub fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "lock") {
                out.insert(
                    path.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}
