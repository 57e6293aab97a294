//! `outpost-cloud import` and `outpost-cloud export`: hubs' USB sticks at the cloud (see
//! `outpost_engine::mule`). A SQLite cloud that runs handles them itself (through its
//! control socket); a stopped one is opened here. A PostgreSQL cloud's database takes
//! any number of writers, so the command works on it directly.

use std::path::Path;

use outpost_engine::media::Blobs;
use outpost_engine::mule::cli::{self as stick, FROM_CLOUD};
use outpost_engine::mule::control::{Op, Request};
use outpost_engine::mule::{self, Summary};
use outpost_storage::LogStore as _;

use crate::database::Database;
use crate::{CloudConfig, CloudIdentity};

/// The cloud's settings for a one-shot command: storage and limits as `run` reads them;
/// the listeners, which it never opens, need not be set.
fn config(dir: &Path) -> anyhow::Result<CloudConfig> {
    CloudConfig::load_with(dir, |c| {
        for addr in [&mut c.server.listen, &mut c.server.quic_listen] {
            if addr.is_empty() {
                "127.0.0.1:0".clone_into(addr);
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("{}", e.problems.join("; ")))
}

/// Runs `op` on the cloud in `dir`: through the running SQLite cloud, on the stopped one,
/// or on its PostgreSQL database.
async fn on_cloud(
    id: &CloudIdentity,
    database: Option<String>,
    op: Op,
    relay: Option<String>,
    max_bytes: u64,
    body: Vec<u8>,
) -> anyhow::Result<(Summary, Vec<u8>)> {
    let keys = id.mule_keys()?;
    let certs = id.layout.relays();
    let req = Request { op, relay, max_bytes, len: 0 };
    match Database::of(&id.layout.dir, id, database)? {
        Database::Sqlite(db) => {
            stick::on_server(&id.layout.data(), req, body, |req, body| async move {
                let engine = crate::server::engine_config(&config(&id.layout.dir)?, id);
                let store = outpost_engine::server::open_store(&engine, &db)?;
                let blobs = Blobs::open(store.clone(), &db, engine.media.clone(), &engine.storage)?;
                let r = mule::cloud_request(&store, Some(&blobs), &keys, &certs, req, &body).await;
                store.shutdown().await;
                Ok(r)
            })
            .await
        }
        Database::Postgres(url) => {
            let cfg = config(&id.layout.dir)?;
            let engine = crate::server::engine_config(&cfg, id);
            let router = std::sync::Arc::new(outpost_engine::router::Router::new());
            let store =
                outpost_store_postgres::PgStore::open(&url, crate::server::postgres_options(&cfg), router).await?;
            let blobs = Blobs::open(store.clone(), &id.layout.database(), engine.media.clone(), &engine.storage)?;
            let r = mule::cloud_request(&store, Some(&blobs), &keys, &certs, req, &body).await;
            store.shutdown().await;
            r.map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))
        }
    }
}

/// `outpost-cloud import --dir DIR PATH`: every hub file in PATH (a stick's folder) or
/// the file PATH, each answered beside it (`RELAY.from-cloud.outpost`). Returns a line
/// per file; fails if any file was refused (the others are still imported).
pub async fn import(dir: &Path, path: &Path, max_mb: u64, database: Option<String>) -> anyhow::Result<Vec<String>> {
    let id = CloudIdentity::load(dir)?;
    let files = stick::hub_files(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if files.is_empty() {
        anyhow::bail!(
            "no hub file (*.to-cloud.outpost) in {}: run `outpost-relay export` at the hub first",
            path.display()
        );
    }
    let (mut lines, mut failed) = (Vec::new(), Vec::new());
    for file in files {
        let result = async {
            let body = stick::read_file(&file)?;
            let (summary, answer) =
                on_cloud(&id, database.clone(), Op::Import, None, max_mb.saturating_mul(1 << 20), body).await?;
            let folder = file.parent().unwrap_or(Path::new("."));
            let target = folder.join(format!("{}.{FROM_CLOUD}", summary.relay_id));
            stick::write_file(&target, &answer)?;
            anyhow::Ok(format!(
                "{} from hub {}; its answer ({} bytes) → {}",
                summary.line(&format!("imported {}", file.display())),
                summary.relay_id,
                answer.len(),
                target.display()
            ))
        }
        .await;
        match result {
            Ok(line) => lines.push(line),
            Err(e) => failed.push(format!("{}: {e:#}", file.display())),
        }
    }
    if !failed.is_empty() {
        for l in &lines {
            println!("{l}");
        }
        anyhow::bail!("{}", failed.join("\n"));
    }
    Ok(lines)
}

/// `outpost-cloud export --dir DIR --relay ID --to PATH`: the answer for hub ID on demand
/// (its receipt and what it lacks of its rooms), without a stick from it.
pub async fn export(
    dir: &Path,
    relay: &str,
    to: &Path,
    max_mb: u64,
    database: Option<String>,
) -> anyhow::Result<String> {
    let id = CloudIdentity::load(dir)?;
    let target = stick::stick_file(to, relay, FROM_CLOUD);
    let (summary, bytes) =
        on_cloud(&id, database, Op::Export, Some(relay.to_owned()), max_mb.saturating_mul(1 << 20), Vec::new()).await?;
    stick::write_file(&target, &bytes)?;
    Ok(format!("{} → {}", summary.line(&format!("exported for hub {relay}")), target.display()))
}
