//! What webhook delivery needs from storage: each endpoint's position in the log and a
//! lease that lets one server at a time deliver to it.
//!
//! Several cloud servers on one database each run a delivery task per endpoint; the
//! lease makes all but one of them wait. It is a row with a holder and an expiry,
//! changed only by compare-and-set (take it when it is free, expired or already ours),
//! so any database with atomic single-row updates can hold it: no advisory locks, no
//! sessions. Times are the callers' wall clocks (ms since the Unix epoch), so the
//! servers' clocks must agree to well within a lease's length.
//!
//! Contracts (the conformance suite checks them): a position only moves forward and
//! survives restarts; an endpoint never seen is at cursor 0; a lease is held by one
//! holder until it expires or is released, renewing it keeps it, and after expiry the
//! next holder to ask gets it; only the holder moves the position.

use std::future::Future;

use outpost_shared::Cursor;

use crate::StoreError;

pub trait HookStore: Clone + Send + Sync + 'static {
    /// Where delivery to endpoint `name` resumes: every message up to this cursor was
    /// delivered (acknowledged by the endpoint). `Cursor(0)` for an endpoint never seen.
    fn hook_position(&self, name: &str) -> impl Future<Output = Result<Cursor, StoreError>> + Send;
    /// Takes or renews the lease on endpoint `name` for `holder` until `now_ms + ttl_ms`:
    /// granted when nobody holds it, when `holder` already does, or when the current
    /// lease expired at or before `now_ms`. Answers whether `holder` holds it now;
    /// resolves after the commit.
    fn hook_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Records that everything up to `cursor` was delivered to `name`, if `holder` is
    /// still the lease's holder (a server that lost the lease must not move another's
    /// position); the position never moves back. Answers whether it was recorded;
    /// resolves after the commit.
    fn hook_advance(
        &self,
        name: &str,
        holder: &str,
        cursor: Cursor,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Gives up `holder`'s lease on `name` (a clean stop), so another server can take it
    /// at once instead of after the expiry. Nothing happens if another holds it.
    fn hook_release(&self, name: &str, holder: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}
