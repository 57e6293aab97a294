//! What sign-in, the role rules and the link need from storage: the audit log and the
//! token revocation list.
//!
//! Contracts: an audit event is recorded with the next commit (never lost on a clean
//! stop); revocations are idempotent by what they revoke, and once committed they reach
//! [`SecurityStore::revocations`] of every server on the same database.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use outpost_shared::{Claims, Revocation, RevocationList};
use tokio_util::sync::CancellationToken;

use crate::{AuditEvent, AuditRecord, StoreError};

pub trait SecurityStore: Clone + Send + Sync + 'static {
    /// Records a security event (with the next commit).
    fn audit(&self, event: AuditEvent) -> impl Future<Output = ()> + Send;
    /// Records a security event and resolves after it committed.
    fn audit_committed(&self, event: AuditEvent) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A page of the audit log after `after`, oldest first, and whether there is more.
    fn audit_page(
        &self,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<AuditRecord>, bool), StoreError>> + Send;
    /// Keeps [`SecurityStore::revocations`] current with entries written by anyone (this
    /// server, a command run beside it, another server on the same database), checking at
    /// least every `every`, until `stop`.
    fn watch_revocations(self, every: Duration, stop: CancellationToken) -> impl Future<Output = ()> + Send;
    /// Whether the current revocation list names these claims.
    fn is_revoked(&self, claims: &Claims) -> bool;
    /// The revocation list; changes when it does.
    fn revocations(&self) -> tokio::sync::watch::Receiver<Arc<RevocationList>>;
    /// Records revocation entries from `from` (the cloud, or a command); resolves after
    /// the commit with how many were new.
    fn apply_revocations(
        &self,
        from: &str,
        entries: Vec<Revocation>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
    /// Keeps the delegation the cloud gave this hub's renewal key (a compact JWS, checked
    /// by the caller), replacing the one kept before; resolves after the commit.
    fn save_delegation(&self, token: String) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The delegation kept by [`SecurityStore::save_delegation`], if any.
    fn delegation(&self) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}
