//! A USB stick as the uplink (a "data mule"), for villages with no network for weeks.
//!
//! The stick carries what the link would: the hub's file holds every entry of its log the
//! cloud has not confirmed, in the link's own batches; the cloud imports them as if they
//! had arrived over QUIC and answers with a file of its own: its receipt (how far it
//! holds the hub's log) and everything of the hub's rooms the hub does not hold yet. The
//! hub applies that answer as it would the link's acks and batches. Imports are
//! idempotent by message id and every mark only moves forward, so a stick imported
//! twice, an old stick after a newer one, or a stick and the network carrying the same
//! entries never lose or repeat anything.
//!
//! Files are sealed ([`seal`]): encrypted to the recipient and signed by the sender, with
//! the keys the link's TLS already uses (the hub's certificate key, the cloud's relay CA
//! key). A file from another cloud, for another hub or changed on the way is refused
//! before anything is imported.

pub mod cli;
pub mod control;
pub mod seal;

use std::sync::Arc;

use outpost_shared::media::BlobId;
use outpost_shared::uplink::batch::{self, Lane};
use outpost_shared::uplink::dict;
use outpost_shared::{Cursor, RoomId};
use outpost_storage::{Forwarded, LinkStore, Outbound, OutboundQuery, Storage, StoreError};
use p256::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

pub use seal::{Direction, Header, SealError};

use crate::link::uplink::CLOUD_PEER;
use crate::media::{Blobs, Owner, Upload};

/// Media files listed for one stick at most (more wait for the next).
const FILES_PER_STICK: u32 = 10_000;
/// Entries per batch on a stick (as on the link).
const PAGE: usize = 1024;
/// Body bytes per batch on a stick, about.
const PAGE_BYTES: usize = 1 << 20;
/// Largest batch accepted from a stick, inflated (as on the link).
const MAX_BATCH_RAW: usize = crate::link::MAX_BATCH_RAW;
/// The default bound of one stick file (`--max-mb`): past it, the file holds the oldest
/// entries and says more wait for the next trip.
pub const DEFAULT_MAX_MB: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MuleError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("{0}")]
    Refused(String),
    #[error("the file's contents are not valid: {0}")]
    Contents(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MuleError {
    /// A stable code for scripts and the control socket.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Seal(SealError::NotMule) => "not_a_stick_file",
            Self::Seal(SealError::BadSignature | SealError::Damaged(_) | SealError::Header(_)) => "tampered",
            Self::Seal(SealError::Decrypt) => "wrong_recipient",
            Self::Seal(_) => "key",
            Self::Refused(_) => "refused",
            Self::Contents(_) => "tampered",
            Self::Store(_) => "storage",
        }
    }
}

/// A hub's keys, from its enrollment (`identity/` of the relay directory).
pub struct HubKeys {
    pub cloud_id: String,
    pub relay_id: String,
    /// Its certificate (PEM), sent in its files so the cloud can check them.
    pub cert_pem: String,
    pub key: SecretKey,
    /// The cloud's relay CA: its files are signed with its key; ours are encrypted to it.
    pub ca: PublicKey,
}

/// The cloud's keys.
pub struct CloudKeys {
    pub cloud_id: String,
    /// The relay CA certificate (PEM): hubs' certificates must chain to it.
    pub ca_pem: String,
    pub ca_key: SecretKey,
}

/// What a hub's file says beside its entries (its first section).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToCloud {
    /// The hub's database.
    pub relay_epoch: String,
    /// The cloud database the hub last heard from ("" if none): the hub's marks below are
    /// about that one.
    pub cloud_epoch: String,
    /// The cloud confirmed the hub's log up to here (the file starts after it) ...
    pub after: Cursor,
    /// ... and the file holds it through here (more past it if `more`).
    pub until: Cursor,
    pub more: bool,
    /// The hub holds the cloud's log up to here: the cloud's answer starts after it.
    pub holds_cloud_through: Cursor,
    /// Rooms the hub serves (what the cloud sends down).
    pub rooms: Vec<RoomId>,
    pub entries: u64,
    /// How many sections after the manifest are batches; media files follow them, one
    /// section each, in the order of `files`.
    #[serde(default)]
    pub batches: u32,
    /// Media files the cloud lacks, named by messages up to `until`.
    #[serde(default)]
    pub files: Vec<FileEntry>,
}

/// A media file on a stick (its bytes are a section of their own; the name is their
/// SHA-256, checked on import).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub blob: BlobId,
    pub size: u64,
}

/// What the cloud's answer says beside its entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FromCloud {
    pub cloud_epoch: String,
    /// The hub database this answers: a hub with another one refuses it.
    pub relay_epoch: String,
    /// The cloud holds the hub's log up to here (its receipt).
    pub holds_relay_through: Cursor,
    /// The cloud's log after here, through `until`, for the hub's rooms.
    pub after: Cursor,
    pub until: Cursor,
    pub more: bool,
    pub entries: u64,
    /// Media files of the hub's stick the cloud now holds whole.
    #[serde(default)]
    pub files_held: Vec<BlobId>,
}

/// What an export or import did, as printed and as the control socket answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Entries written to the file (export) or found in it (import).
    pub entries: u64,
    /// Of those, entries this server did not hold before (import).
    pub fresh: u64,
    /// The other side's log is confirmed up to here on this server (import).
    pub confirmed_through: u64,
    /// More entries wait than fit in this file (`--max-mb`): export again.
    pub more: bool,
    pub bytes: u64,
    /// Media files carried (export) or taken in whole (import).
    #[serde(default)]
    pub files: u64,
    /// For an answer file: the hub it is for.
    pub relay_id: String,
}

impl Summary {
    pub fn line(&self, what: &str) -> String {
        let more = if self.more { "; more wait than fit in one file: run it again after this trip" } else { "" };
        format!(
            "{what}: {} entries ({} new), {} media files, confirmed through {}, {} bytes{more}",
            self.entries, self.fresh, self.files, self.confirmed_through, self.bytes
        )
    }
}

/// Our log for a peer as a file carries it: the link's batches, both lanes.
struct Collected {
    sections: Vec<Vec<u8>>,
    entries: u64,
    until: Cursor,
    more: bool,
}

/// Pages our log for `peer` (of `rooms` only, if given) in (`after`, `until`] as the link
/// would: the emergency lane, then the normal lane.
struct Pager<'a, S> {
    store: &'a S,
    peer: &'a str,
    rooms: Option<Arc<[RoomId]>>,
    after: Cursor,
    until: Cursor,
    lanes: std::slice::Iter<'static, Lane>,
    lane: Option<Lane>,
    /// Where the current lane has been read to.
    from: Cursor,
}

impl<'a, S: LinkStore> Pager<'a, S> {
    fn new(store: &'a S, peer: &'a str, rooms: Option<Arc<[RoomId]>>, after: Cursor, until: Cursor) -> Self {
        const LANES: [Lane; 2] = [Lane::Emergency, Lane::Normal];
        let mut lanes = LANES.iter();
        let lane = lanes.next().copied();
        Self { store, peer, rooms, after, until, lanes, lane, from: after }
    }

    /// The next page and its lane; `None` once both lanes are read through `until`.
    async fn next(&mut self) -> Result<Option<(Lane, Outbound)>, MuleError> {
        while let Some(lane) = self.lane {
            if self.from < self.until {
                let q = OutboundQuery {
                    peer: self.peer.to_owned(),
                    rooms: self.rooms.clone(),
                    after: self.from,
                    until: Some(self.until),
                    lane,
                    limit: PAGE,
                    max_bytes: PAGE_BYTES,
                    newest_first: false,
                };
                let out = self.store.outbound(q).await?;
                if out.scanned_to > self.from {
                    self.from = out.scanned_to;
                    return Ok(Some((lane, out)));
                }
            }
            self.lane = self.lanes.next().copied();
            self.from = self.after;
        }
        Ok(None)
    }
}

/// Our log after `after` for `peer` (of `rooms` only, if given), as batches, until
/// `max_bytes` of batches are written. Emergencies all go; ordinary entries while the
/// file has room.
async fn collect<S: LinkStore>(
    store: &S,
    peer: &str,
    rooms: Option<Arc<[RoomId]>>,
    after: Cursor,
    max_bytes: u64,
) -> Result<Collected, MuleError> {
    let head = store.head();
    let mut c = Collected { sections: Vec::new(), entries: 0, until: head.max(after), more: false };
    let mut bytes = 0u64;
    let mut pager = Pager::new(store, peer, rooms, after, head);
    while let Some((lane, out)) = pager.next().await? {
        if !out.entries.is_empty() {
            let id = c.sections.len() as u64;
            c.entries += out.entries.len() as u64;
            // Compressing is CPU work: off the runtime, as on the link, so a running hub's
            // sessions do not wait for a courier's export.
            let b = tokio::task::spawn_blocking(move || {
                let dictionary = dict::get(dict::CURRENT).map(|d| (dict::CURRENT, d));
                batch::encode(id, lane, after, &out.entries, dictionary)
            })
            .await
            .map_err(|e| MuleError::Contents(e.to_string()))?
            .map_err(|e| MuleError::Contents(e.to_string()))?;
            bytes += b.len() as u64;
            c.sections.push(b);
        }
        if lane == Lane::Normal && bytes >= max_bytes && pager.from < head {
            c.until = pager.from;
            c.more = true;
            break;
        }
    }
    Ok(c)
}

/// Messages written here among our log in (`after`, `until`] for `peer`: their senders
/// learn `forwarded` once the peer confirmed them.
async fn forwardable<S: LinkStore>(
    store: &S,
    peer: &str,
    rooms: Option<Arc<[RoomId]>>,
    after: Cursor,
    until: Cursor,
) -> Result<Vec<Forwarded>, MuleError> {
    let mut all = Vec::new();
    let mut pager = Pager::new(store, peer, rooms, after, until);
    while let Some((_, out)) = pager.next().await? {
        all.extend(out.forwardable);
    }
    Ok(all)
}

/// Imports the batches of a file from `peer`; returns (entries, fresh). Marks are left
/// to the caller: they move only once every batch is in.
async fn import_batches<S: LinkStore>(
    store: &S,
    peer: &str,
    sections: Vec<Vec<u8>>,
    hwm: Cursor,
) -> Result<(u64, u64), MuleError> {
    let (mut entries, mut fresh) = (0u64, 0u64);
    for s in sections {
        let (_, batch) = tokio::task::spawn_blocking(move || batch::decode(&s, MAX_BATCH_RAW))
            .await
            .map_err(|e| MuleError::Contents(e.to_string()))?
            .map_err(|e| MuleError::Contents(e.to_string()))?;
        entries += batch.len() as u64;
        fresh += store.import(peer, batch, hwm).await? as u64;
    }
    Ok((entries, fresh))
}

/// Takes in the media files of a hub's stick; returns those now held whole here. A file
/// refused here (too large, storage full, bytes that do not match its name) is left out:
/// the hub keeps it and sends it again.
async fn take_files<S: Storage>(
    blobs: Option<&Blobs<S>>,
    relay: &str,
    files: &[FileEntry],
    sections: Vec<Vec<u8>>,
) -> Result<Vec<BlobId>, MuleError> {
    let Some(blobs) = blobs else { return Ok(Vec::new()) };
    let owner = Owner::Peer(relay.to_owned());
    let mut held = Vec::new();
    for (f, bytes) in files.iter().zip(sections) {
        if bytes.len() as u64 != f.size {
            return Err(MuleError::Contents(format!("file {} is not {} bytes", f.blob, f.size)));
        }
        let taken = match blobs.begin(&owner, f.blob, f.size, true).await {
            Ok(Upload::Complete { .. }) => Ok(Upload::Complete { size: f.size }),
            Ok(Upload::Partial { .. }) => blobs.write(&owner, f.blob, 0, bytes).await,
            Err(e) => Err(e),
        };
        match taken {
            Ok(Upload::Complete { .. }) => held.push(f.blob),
            Ok(Upload::Partial { .. }) => {}
            Err(crate::media::MediaError::Io(e)) => return Err(MuleError::Contents(e.to_string())),
            Err(crate::media::MediaError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(%relay, blob = %f.blob, error = %e, "a media file from a stick was refused; the hub keeps it")
            }
        }
    }
    Ok(held)
}

fn manifest<T: serde::de::DeserializeOwned>(sections: &[Vec<u8>]) -> Result<T, MuleError> {
    let first = sections.first().ok_or_else(|| MuleError::Contents("no manifest".into()))?;
    serde_json::from_slice(first).map_err(|e| MuleError::Contents(format!("the manifest: {e}")))
}

/// `outpost-relay export`: everything the cloud has not confirmed, sealed for it.
pub async fn hub_export<S: Storage>(
    store: &S,
    blobs: Option<&Blobs<S>>,
    keys: &HubKeys,
    max_bytes: u64,
) -> Result<(Summary, Vec<u8>), MuleError> {
    let known = store.peer_known(CLOUD_PEER).await?.unwrap_or_default();
    let mut c = collect(store, CLOUD_PEER, None, known.sent_hwm, max_bytes).await?;
    let batches = u32::try_from(c.sections.len()).unwrap_or(u32::MAX);
    // Media files named by the messages on the stick, while the file has room; the rest
    // wait for the next trip (the network's bulk lane sends them the same way).
    let mut files = Vec::new();
    if let Some(blobs) = blobs {
        let mut bytes: u64 = c.sections.iter().map(|s| s.len() as u64).sum();
        for (blob, size) in store.blobs_named_through(CLOUD_PEER, c.until, FILES_PER_STICK).await? {
            if bytes + size > max_bytes {
                c.more = true;
                break;
            }
            let len = usize::try_from(size).map_err(|e| MuleError::Contents(e.to_string()))?;
            let data = blobs.read_at(blob, 0, len).await.map_err(|e| MuleError::Contents(e.to_string()))?;
            bytes += size;
            files.push(FileEntry { blob, size });
            c.sections.push(data);
        }
    }
    let m = ToCloud {
        relay_epoch: store.epoch().0.clone(),
        cloud_epoch: known.epoch,
        after: known.sent_hwm,
        until: c.until,
        more: c.more,
        holds_cloud_through: known.recv_hwm,
        rooms: store.rooms(),
        entries: c.entries,
        batches,
        files,
    };
    let mut sections = vec![serde_json::to_vec(&m).map_err(|e| MuleError::Contents(e.to_string()))?];
    sections.extend(c.sections);
    let header = Header {
        v: 1,
        direction: Direction::ToCloud,
        cloud_id: keys.cloud_id.clone(),
        relay_id: keys.relay_id.clone(),
        relay_cert: Some(keys.cert_pem.clone()),
        created_at: crate::clock::now_ms(),
        ephemeral: String::new(),
        sections: 0,
    };
    let file = seal::seal(header, &sections, &keys.key, &keys.ca)?;
    let summary = Summary {
        entries: m.entries,
        more: m.more,
        bytes: file.len() as u64,
        files: m.files.len() as u64,
        relay_id: keys.relay_id.clone(),
        ..Summary::default()
    };
    Ok((summary, file))
}

/// `outpost-relay import`: the cloud's answer applied (its receipt, then its entries).
pub async fn hub_import<S: Storage>(
    store: &S,
    blobs: Option<&Blobs<S>>,
    keys: &HubKeys,
    file: &[u8],
) -> Result<Summary, MuleError> {
    let header = seal::peek(file)?;
    if header.direction != Direction::FromCloud {
        return Err(MuleError::Refused(
            "this file is a hub's export, for the cloud: import it there with `outpost-cloud import`".into(),
        ));
    }
    if header.cloud_id != keys.cloud_id {
        return Err(MuleError::Refused(format!(
            "this file comes from cloud {:?}, and this hub belongs to cloud {:?}",
            header.cloud_id, keys.cloud_id
        )));
    }
    if header.relay_id != keys.relay_id {
        return Err(MuleError::Refused(format!(
            "this file is for hub {:?}, not this one ({:?}): give it to that hub",
            header.relay_id, keys.relay_id
        )));
    }
    let (_, mut sections) = seal::open(file, &keys.key, &keys.ca)?;
    let m: FromCloud = manifest(&sections)?;
    if m.relay_epoch != store.epoch().0 {
        return Err(MuleError::Refused(
            "this answer is for an earlier database of this hub (its storage was replaced since): export a new \
             stick and take it to the cloud"
                .into(),
        ));
    }
    // As a handshake would: a cloud with a new database gets our whole log again.
    store.peer_hello(CLOUD_PEER, &m.cloud_epoch, Vec::new()).await?;
    let before = store.peer_known(CLOUD_PEER).await?.unwrap_or_default();
    let batches = sections.split_off(1);
    let (entries, fresh) = import_batches(store, CLOUD_PEER, batches, before.recv_hwm).await?;
    // The cloud started after what we said we hold (or acknowledged on the link) in this
    // database of ours: with every batch in, we hold its log through `until`.
    store.import(CLOUD_PEER, Vec::new(), m.until).await?;
    let confirmed = m.holds_relay_through;
    if confirmed > before.sent_hwm {
        let forwarded = forwardable(store, CLOUD_PEER, None, before.sent_hwm, confirmed).await?;
        store.peer_acked(CLOUD_PEER, confirmed, forwarded, crate::clock::now_ms()).await;
    }
    // Files the cloud took in whole from our last stick: the bulk lane sends them no more.
    if let Some(blobs) = blobs {
        for blob in &m.files_held {
            blobs.confirm(*blob, CLOUD_PEER).await.map_err(|e| MuleError::Contents(e.to_string()))?;
        }
    }
    let detail = format!(
        "the cloud's answer imported from a stick: {entries} entries ({fresh} new); the cloud holds this hub's log through {}",
        confirmed.0
    );
    store
        .audit(
            outpost_storage::AuditEvent::new(outpost_storage::AuditKind::RelayConnected, detail)
                .actor(keys.cloud_id.as_str()),
        )
        .await;
    Ok(Summary {
        entries,
        fresh,
        confirmed_through: confirmed.0.max(before.sent_hwm.0),
        files: m.files_held.len() as u64,
        more: m.more,
        bytes: file.len() as u64,
        relay_id: keys.relay_id.clone(),
    })
}

/// Who a hub's file is from, checked against the cloud's CA: its id and its key.
pub fn check_hub_file(keys: &CloudKeys, header: &Header) -> Result<(String, PublicKey), MuleError> {
    if header.direction != Direction::ToCloud {
        return Err(MuleError::Refused(
            "this file is the cloud's answer, for a hub: import it there with `outpost-relay import`".into(),
        ));
    }
    if header.cloud_id != keys.cloud_id {
        return Err(MuleError::Refused(format!(
            "this file is for cloud {:?}, not this one ({:?}): the hub was enrolled by another cloud",
            header.cloud_id, keys.cloud_id
        )));
    }
    let cert = header.relay_cert.as_deref().ok_or_else(|| MuleError::Contents("no hub certificate".into()))?;
    crate::link::tls::verify_relay_cert(&keys.ca_pem, cert, &header.relay_id).map_err(|e| {
        MuleError::Refused(format!("the hub's certificate in this file was not issued by this cloud: {e}"))
    })?;
    Ok((header.relay_id.clone(), seal::cert_key(cert)?))
}

/// `outpost-cloud import`: a hub's file imported exactly once, and the answer to carry
/// back (sealed for that hub). The hub's certificate is kept in `certs` (the cloud's
/// `relays/` folder) so that later answers can be sealed for it on demand.
pub async fn cloud_import<S: Storage>(
    store: &S,
    blobs: Option<&Blobs<S>>,
    keys: &CloudKeys,
    certs: &std::path::Path,
    file: &[u8],
    max_bytes: u64,
) -> Result<(Summary, Vec<u8>), MuleError> {
    let header = seal::peek(file)?;
    let (relay, hub_key) = check_hub_file(keys, &header)?;
    let (_, mut sections) = seal::open(file, &keys.ca_key, &hub_key)?;
    let m: ToCloud = manifest(&sections)?;
    // As the link's handshake would: a hub with a new database gets its rooms again.
    let state = store.peer_hello(&relay, &m.relay_epoch, m.rooms.clone()).await?;
    // The hub's marks are about this database of ours (or it never heard of any).
    let ours = m.cloud_epoch == store.epoch().0;
    let mut batches = sections.split_off(1);
    let files = batches.split_off((m.batches as usize).min(batches.len()));
    let (entries, fresh) = import_batches(store, &relay, batches, state.recv_hwm).await?;
    let files_held = take_files(blobs, &relay, &m.files, files).await?;
    if ours || m.after == Cursor(0) {
        // The hub's file starts where this database confirmed its log (or at its
        // beginning): with every batch in, it holds the hub's log through `until`.
        store.import(&relay, Vec::new(), m.until).await?;
    }
    if ours && m.holds_cloud_through > state.sent_hwm {
        let rooms: Arc<[RoomId]> = m.rooms.clone().into();
        let forwarded = forwardable(store, &relay, Some(rooms), state.sent_hwm, m.holds_cloud_through).await?;
        store.peer_acked(&relay, m.holds_cloud_through, forwarded, crate::clock::now_ms()).await;
    }
    let (mut summary, answer) = cloud_answer(store, keys, &relay, &hub_key, max_bytes, files_held).await?;
    summary.entries = entries;
    summary.fresh = fresh;
    tracing::info!(%relay, entries, fresh, answer_bytes = answer.len(), "stick imported");
    let detail = format!(
        "stick imported: {entries} entries ({fresh} new) of hub epoch {}; holds its log through {}",
        m.relay_epoch, summary.confirmed_through
    );
    store
        .audit(
            outpost_storage::AuditEvent::new(outpost_storage::AuditKind::RelayConnected, detail).actor(relay.as_str()),
        )
        .await;
    if let Some(cert) = header.relay_cert.as_deref() {
        keep_hub_cert(certs, &relay, cert);
    }
    Ok((summary, answer))
}

/// The cloud's answer for `relay`: its receipt and what the hub lacks of its rooms.
pub async fn cloud_answer<S: LinkStore>(
    store: &S,
    keys: &CloudKeys,
    relay: &str,
    hub_key: &PublicKey,
    max_bytes: u64,
    files_held: Vec<BlobId>,
) -> Result<(Summary, Vec<u8>), MuleError> {
    let known = store.peer_known(relay).await?.ok_or_else(|| {
        MuleError::Refused(format!("hub {relay} never reached this cloud: import a stick from it first"))
    })?;
    let rooms: Arc<[RoomId]> = known.rooms.clone().into();
    let c = collect(store, relay, Some(rooms), known.sent_hwm, max_bytes).await?;
    let m = FromCloud {
        cloud_epoch: store.epoch().0.clone(),
        relay_epoch: known.epoch,
        holds_relay_through: known.recv_hwm,
        after: known.sent_hwm,
        until: c.until,
        more: c.more,
        entries: c.entries,
        files_held,
    };
    let mut sections = vec![serde_json::to_vec(&m).map_err(|e| MuleError::Contents(e.to_string()))?];
    sections.extend(c.sections);
    let header = Header {
        v: 1,
        direction: Direction::FromCloud,
        cloud_id: keys.cloud_id.clone(),
        relay_id: relay.to_owned(),
        relay_cert: None,
        created_at: crate::clock::now_ms(),
        ephemeral: String::new(),
        sections: 0,
    };
    let file = seal::seal(header, &sections, &keys.ca_key, hub_key)?;
    let summary = Summary {
        entries: m.entries,
        confirmed_through: m.holds_relay_through.0,
        files: m.files_held.len() as u64,
        more: m.more,
        bytes: file.len() as u64,
        relay_id: relay.to_owned(),
        ..Summary::default()
    };
    Ok((summary, file))
}

/// A hub's keys from its relay directory (`identity/`, written by `outpost-relay init`).
pub fn hub_keys(dir: &std::path::Path, config: &crate::RelayConfig) -> Result<HubKeys, String> {
    let (ca, cert, key) = crate::link::uplink::identity_files(dir)?;
    Ok(HubKeys {
        cloud_id: config.identity.cloud_id.clone(),
        relay_id: config.identity.relay_id.clone(),
        cert_pem: cert,
        key: seal::secret_key(&key).map_err(|e| format!("identity/relay.key: {e}"))?,
        ca: seal::cert_key(&ca).map_err(|e| format!("identity/ca.crt: {e}"))?,
    })
}

/// What a running hub does with a stick request (its control socket).
pub fn hub_handler<S: Storage>(store: S, blobs: Option<Blobs<S>>, keys: Arc<HubKeys>) -> control::Handler {
    Arc::new(move |req: control::Request, body: Vec<u8>| {
        let (store, blobs, keys) = (store.clone(), blobs.clone(), keys.clone());
        Box::pin(async move { hub_request(&store, blobs.as_ref(), &keys, req, &body).await })
    })
}

/// A stick request at a hub: a file for the cloud written, or the cloud's answer applied
/// (the answer file is then empty).
pub async fn hub_request<S: Storage>(
    store: &S,
    blobs: Option<&Blobs<S>>,
    keys: &HubKeys,
    req: control::Request,
    body: &[u8],
) -> Result<(Summary, Vec<u8>), MuleError> {
    match req.op {
        control::Op::Export => hub_export(store, blobs, keys, req.max_bytes).await,
        control::Op::Import => Ok((hub_import(store, blobs, keys, body).await?, Vec::new())),
    }
}

/// What a running cloud does with a stick request (its control socket).
pub fn cloud_handler<S: Storage>(
    store: S,
    blobs: Option<Blobs<S>>,
    keys: Arc<CloudKeys>,
    certs: std::path::PathBuf,
) -> control::Handler {
    Arc::new(move |req: control::Request, body: Vec<u8>| {
        let (store, blobs, keys, certs) = (store.clone(), blobs.clone(), keys.clone(), certs.clone());
        Box::pin(async move { cloud_request(&store, blobs.as_ref(), &keys, &certs, req, &body).await })
    })
}

/// A stick request at the cloud: a hub's file imported (and answered), or an answer made
/// on demand for `req.relay`.
pub async fn cloud_request<S: Storage>(
    store: &S,
    blobs: Option<&Blobs<S>>,
    keys: &CloudKeys,
    certs: &std::path::Path,
    req: control::Request,
    body: &[u8],
) -> Result<(Summary, Vec<u8>), MuleError> {
    match req.op {
        control::Op::Import => cloud_import(store, blobs, keys, certs, body, req.max_bytes).await,
        control::Op::Export => {
            let relay = req.relay.unwrap_or_default();
            let key = known_hub_key(certs, &relay)?;
            cloud_answer(store, keys, &relay, &key, req.max_bytes, Vec::new()).await
        }
    }
}

/// Keeps a hub's certificate (checked by the caller) for answers made on demand.
pub fn keep_hub_cert(certs: &std::path::Path, relay: &str, cert_pem: &str) {
    let path = certs.join(format!("{relay}.crt"));
    if std::fs::read_to_string(&path).is_ok_and(|old| old == cert_pem) {
        return;
    }
    if let Err(e) = std::fs::create_dir_all(certs).and_then(|()| control::write_atomically(&path, cert_pem.as_bytes()))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the hub's certificate; `export --relay` will need a stick from it first");
    }
}

/// The key of hub `relay`, from the certificate kept at enrollment or at its last stick.
pub fn known_hub_key(certs: &std::path::Path, relay: &str) -> Result<PublicKey, MuleError> {
    let path = certs.join(format!("{relay}.crt"));
    let pem = std::fs::read_to_string(&path).map_err(|_| {
        MuleError::Refused(format!(
            "no certificate of hub {relay} is kept here ({}): import a stick from it first, or enroll it again",
            path.display()
        ))
    })?;
    Ok(seal::cert_key(&pem)?)
}
