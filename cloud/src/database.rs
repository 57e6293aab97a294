//! Which database the one-shot commands (`token`, `revoke`, `audit`, `enroll-relay`,
//! `migrate`) write to: the cloud's SQLite file, or the PostgreSQL database its nodes
//! share (`--database`, else `storage.database` of cloud.toml and the environment).

use std::path::{Path, PathBuf};

use outpost_shared::Revocation;
use outpost_storage::{AuditEvent, AuditRecord};

use crate::{CloudConfig, CloudIdentity};

/// The cloud's database, as a command reaches it.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    /// `flag` if given, else what the configuration of `dir` names, else the SQLite file.
    pub fn of(dir: &Path, id: &CloudIdentity, flag: Option<String>) -> anyhow::Result<Self> {
        let named = match flag {
            Some(url) => Some(url),
            None => CloudConfig::database(dir).map_err(|e| anyhow::anyhow!("{}", e.problems.join("; ")))?,
        };
        Ok(match named {
            Some(url) => {
                outpost_store_postgres::parse_url(&url)?;
                Self::Postgres(url)
            }
            None => Self::Sqlite(id.layout.database()),
        })
    }

    /// Records revocations (each with its audit row) and audit events in one transaction;
    /// returns how many revocations were new.
    pub fn record(&self, revocations: &[Revocation], events: &[AuditEvent]) -> anyhow::Result<usize> {
        let at = outpost_engine::clock::now_ms();
        Ok(match self {
            Self::Sqlite(db) => outpost_store_sqlite::security::record_offline(db, revocations, events, "cli", at)?,
            Self::Postgres(url) => {
                Self::block_on(outpost_store_postgres::security::record_offline(url, revocations, events, "cli", at))??
            }
        })
    }

    /// A page of the audit log.
    pub fn audit_page(&self, after: u64, limit: u32) -> anyhow::Result<(Vec<AuditRecord>, bool)> {
        Ok(match self {
            Self::Sqlite(db) => outpost_store_sqlite::security::read_offline(db, after, limit)?,
            Self::Postgres(url) => Self::block_on(outpost_store_postgres::security::read_offline(url, after, limit))??,
        })
    }
}

impl Database {
    /// Runs `f` on a runtime of its own (the commands are synchronous).
    pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(rt.block_on(f))
    }
}
