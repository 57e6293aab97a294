//! The stick commands' common part: find the file, reach the running server through its
//! control socket or, with none running, open the database here under the data
//! directory's lock, and write the answer file so it is whole or absent.

use std::future::Future;
use std::path::{Path, PathBuf};

use super::control::{self, DataLock, Op, Request};
use super::{MuleError, Summary};

/// A hub's file for its cloud.
pub const TO_CLOUD: &str = "to-cloud.outpost";
/// The cloud's answer for a hub.
pub const FROM_CLOUD: &str = "from-cloud.outpost";

/// Where a stick file of `relay` goes or comes from: `path` itself if it names a file,
/// else `path/<relay>.<suffix>` (a stick's folder).
pub fn stick_file(path: &Path, relay: &str, suffix: &str) -> PathBuf {
    if path.is_dir() { path.join(format!("{relay}.{suffix}")) } else { path.to_path_buf() }
}

/// Every hub file in `path` (a folder), or `path` itself.
pub fn hub_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&format!(".{TO_CLOUD}"))))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads a stick file, saying plainly what is wrong with the path.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Runs `req` on the server whose data directory is `data`: through its control socket
/// if it runs, else here (`direct`, given the request and the file), holding the
/// directory's lock.
pub async fn on_server<F, Fut>(
    data: &Path,
    req: Request,
    body: Vec<u8>,
    direct: F,
) -> anyhow::Result<(Summary, Vec<u8>)>
where
    F: FnOnce(Request, Vec<u8>) -> Fut,
    Fut: Future<Output = anyhow::Result<Result<(Summary, Vec<u8>), MuleError>>>,
{
    match control::call(data, req.clone(), &body).await {
        Ok(Some((answer, bytes))) if answer.ok => Ok((answer.summary, bytes)),
        Ok(Some((answer, _))) => {
            Err(anyhow::anyhow!("{} ({})", answer.message.unwrap_or_default(), answer.code.unwrap_or_default()))
        }
        Ok(None) => {
            let _lock = DataLock::take(data).map_err(anyhow::Error::msg)?;
            direct(req, body).await?.map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))
        }
        Err(e) => Err(anyhow::anyhow!(
            "the running server stopped answering ({e}); nothing was lost: run the command again once it runs"
        )),
    }
}

/// Writes an answer or export file, whole or not at all.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    control::write_atomically(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The hub's configuration in `dir`, as `run` loads it.
fn hub_config(dir: &Path) -> anyhow::Result<crate::RelayConfig> {
    crate::RelayConfig::load(dir).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs `op` on the hub in `dir` (see [`on_server`]).
async fn on_hub(
    dir: &Path,
    config: crate::RelayConfig,
    op: Op,
    max_bytes: u64,
    body: Vec<u8>,
) -> anyhow::Result<(Summary, Vec<u8>)> {
    let keys = super::hub_keys(dir, &config).map_err(anyhow::Error::msg)?;
    let db = config.db_path(dir);
    // The data directory: where the database, the lock and the socket are.
    let data = db.parent().map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
    let req = Request { op, relay: None, max_bytes, len: 0 };
    on_server(&data, req, body, |req, body| async move {
        let store = crate::server::open_store(&config, &db)?;
        let blobs = crate::media::Blobs::open(store.clone(), &db, config.media.clone(), &config.storage)?;
        let r = super::hub_request(&store, Some(&blobs), &keys, req, &body).await;
        store.shutdown().await;
        Ok(r)
    })
    .await
}

/// `outpost-relay export --dir DIR --to PATH`: what the cloud has not confirmed, sealed
/// for it, written to PATH (a file, or `PATH/<relay>.to-cloud.outpost` in a folder).
pub async fn hub_export(dir: &Path, to: &Path, max_mb: u64) -> anyhow::Result<String> {
    let (summary, bytes) =
        on_hub(dir, hub_config(dir)?, Op::Export, max_mb.saturating_mul(1 << 20), Vec::new()).await?;
    let target = stick_file(to, &summary.relay_id, TO_CLOUD);
    write_file(&target, &bytes)?;
    Ok(format!("{} → {}", summary.line("exported for the cloud"), target.display()))
}

/// `outpost-relay import --dir DIR PATH`: the cloud's answer applied.
pub async fn hub_import(dir: &Path, path: &Path) -> anyhow::Result<String> {
    let config = hub_config(dir)?;
    let source = stick_file(path, &config.identity.relay_id, FROM_CLOUD);
    let (summary, _) = on_hub(dir, config, Op::Import, 0, read_file(&source)?).await?;
    Ok(format!("{} from {}", summary.line("imported the cloud's answer"), source.display()))
}
