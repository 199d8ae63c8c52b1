//! Opening the exchange of distributed training (see
//! [`ember_engine::pipeline::exchange`]) from a `--run-dir` or `--exchange` argument: a
//! folder path, or `s3://BUCKET/PREFIX` for S3-compatible object storage when the trainer
//! is built with the `s3` feature (`cargo build --release -p trainer --features s3`).
//!
//! For S3 the credentials, region and endpoint come from the standard environment
//! variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and for
//! S3-compatible servers (MinIO, Ceph, R2, GCS's XML API) `AWS_ENDPOINT` and, for plain
//! HTTP, `AWS_ALLOW_HTTP=true`. A put to object storage is atomic, so there is nothing
//! unfinished to clean up there.

use anyhow::{Context, Result};
use ember_engine::pipeline::exchange::Exchange;
use ember_engine::pipeline::faults::{Faults, FaultyStorage};
use std::path::Path;
use std::sync::Arc;

/// Set to a [`Faults`] spec (`read=0.1,write=0.1,...`), the exchange fails on purpose:
/// the distributed tests' storage faults.
pub const FAULTS_VARIABLE: &str = "EMBER_STORAGE_FAULTS";

pub fn open_exchange(spec: &Path) -> Result<Exchange> {
    let exchange = open_plain(spec)?;
    let Some(faults) = std::env::var_os(FAULTS_VARIABLE) else {
        return Ok(exchange);
    };
    let faults: Faults = faults.to_string_lossy().parse().context(FAULTS_VARIABLE)?;
    log::warn!(
        "{FAULTS_VARIABLE} is set: the exchange in {} fails on purpose ({faults:?})",
        exchange.describe()
    );
    Ok(Exchange {
        storage: Arc::new(FaultyStorage::new(exchange.storage, faults)),
    })
}

fn open_plain(spec: &Path) -> Result<Exchange> {
    let text = spec.to_string_lossy();
    if let Some(rest) = text.strip_prefix("s3://") {
        return s3::open(rest);
    }
    if text.contains("://") {
        anyhow::bail!("{text}: a run folder is a path or s3://BUCKET/PREFIX");
    }
    Ok(Exchange::new(spec))
}

#[cfg(not(feature = "s3"))]
mod s3 {
    use anyhow::{bail, Result};
    use ember_engine::pipeline::exchange::Exchange;

    pub fn open(rest: &str) -> Result<Exchange> {
        bail!(
            "s3://{rest}: this trainer was built without S3 support; build it with `cargo build --release -p trainer --features s3`"
        )
    }
}

#[cfg(feature = "s3")]
mod s3 {
    use anyhow::{bail, Context, Result};
    use ember_engine::files::MAX_SHARD_BYTES;
    use ember_engine::pipeline::exchange::{Exchange, Storage};
    use object_store::aws::AmazonS3Builder;
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStore, PutPayload};
    use std::sync::Arc;

    /// An S3 bucket (or S3-compatible server) under a prefix.
    struct S3Storage {
        url: String,
        store: Box<dyn ObjectStore>,
        prefix: String,
        runtime: tokio::runtime::Runtime,
    }

    pub fn open(rest: &str) -> Result<Exchange> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("s3://{rest}: no bucket");
        }
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .with_context(|| format!("opening s3://{rest}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the S3 client's runtime")?;
        Ok(Exchange {
            storage: Arc::new(S3Storage {
                url: format!("s3://{rest}"),
                store: Box::new(store),
                prefix: prefix.trim_matches('/').to_string(),
                runtime,
            }),
        })
    }

    impl S3Storage {
        fn path(&self, key: &str) -> ObjectPath {
            if self.prefix.is_empty() {
                ObjectPath::from(key)
            } else {
                ObjectPath::from(format!("{}/{key}", self.prefix))
            }
        }
    }

    impl Storage for S3Storage {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            let path = self.path(key);
            // The object's size is checked before its body is read (the bound of every
            // file the exchange holds, as for a folder).
            let got = self.runtime.block_on(async {
                match self.store.get(&path).await {
                    Ok(r) if r.meta.size as u64 > MAX_SHARD_BYTES => Ok(Err(r.meta.size as u64)),
                    Ok(r) => r.bytes().await.map(|b| Ok(Some(b))),
                    Err(object_store::Error::NotFound { .. }) => Ok(Ok(None)),
                    Err(e) => Err(e),
                }
            });
            match got.with_context(|| format!("reading {}/{key}", self.url))? {
                Ok(bytes) => Ok(bytes.map(|b| b.to_vec())),
                Err(size) => bail!(
                    "{}/{key} is {size} bytes, more than the {MAX_SHARD_BYTES} an exchange object may have",
                    self.url
                ),
            }
        }

        fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
            let path = self.path(key);
            self.runtime
                .block_on(self.store.put(&path, PutPayload::from(bytes.to_vec())))
                .with_context(|| format!("writing {}/{key}", self.url))?;
            Ok(())
        }

        fn list(&self, prefix: &str) -> Result<Vec<String>> {
            let path = self.path(prefix);
            let listing = self
                .runtime
                .block_on(self.store.list_with_delimiter(Some(&path)))
                .with_context(|| format!("listing {}/{prefix}", self.url))?;
            let mut names: Vec<String> = listing
                .objects
                .iter()
                .filter_map(|o| o.location.filename().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            Ok(names)
        }

        fn delete(&self, key: &str) -> Result<()> {
            let path = self.path(key);
            match self.runtime.block_on(self.store.delete(&path)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}/{key}", self.url)),
            }
        }

        fn describe(&self) -> String {
            self.url.clone()
        }
    }
}
