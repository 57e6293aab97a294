//! The device media API over HTTP (docs/protocol.md, Media): tus-style resumable uploads
//! and downloads, with the WebSocket's bearer token and room rules.
//!
//! ```text
//! POST  /api/media              Upload-Length, Upload-Sha256     → 201/200 Upload-Offset
//! HEAD  /api/media/HEX                                           → 200 Upload-Offset / 404
//! PATCH /api/media/HEX          Upload-Offset [Upload-Checksum]  → 204 Upload-Offset / 409
//! DELETE /api/media/HEX                                          → 204 (abandons this user's unfinished upload)
//! GET   /api/media/HEX          [Range: bytes=N-[M]]             → 200/206 the bytes
//! GET   /api/media/HEX/preview                                   → image/jpeg
//! GET   /api/media/HEX/info                                      → JSON
//! ```

use outpost_storage::Storage;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use outpost_shared::media::BlobId;
use outpost_shared::{Action, Claims};
use serde_json::json;

use super::{Blobs, MediaError, Owner, Upload};
use crate::config::RetentionBasis;
use crate::hub::Hub;

const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_SHA256: HeaderName = HeaderName::from_static("upload-sha256");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// The media routes; `Hub::blobs` must be set.
pub fn routes<S: Storage>(hub: Arc<Hub<S>>) -> axum::Router {
    axum::Router::new()
        .route("/api/media", post(create))
        .route("/api/media/{sha}", get(download).head(head).patch(patch).delete(abandon))
        .route("/api/media/{sha}/info", get(info))
        .route("/api/media/{sha}/preview", get(preview))
        .with_state(hub)
}

/// A refusal on its way out of a handler (boxed: a `Response` is large to pass around).
type Fail = Box<Response>;

/// An error answer: `{"code", "message"}` (and the server's offset on a mismatch).
fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Fail {
    Box::new(
        (status, [(header::CACHE_CONTROL, "no-store")], Json(json!({"code": code, "message": message.into()})))
            .into_response(),
    )
}

fn media_error(e: MediaError) -> Fail {
    let msg = e.to_string();
    match e {
        MediaError::BadRequest(_) => refuse(StatusCode::BAD_REQUEST, "bad_request", msg),
        MediaError::TooLarge(_) => refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg),
        MediaError::QuotaExceeded(_) => refuse(StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded", msg),
        MediaError::StorageFull(_) | MediaError::Store(outpost_storage::StoreError::StorageFull { .. }) => {
            refuse(StatusCode::INSUFFICIENT_STORAGE, "storage_full", msg)
        }
        MediaError::NotFound(_) => refuse(StatusCode::NOT_FOUND, "not_found", msg),
        MediaError::OffsetMismatch(at) => {
            let mut r = refuse(StatusCode::CONFLICT, "offset_mismatch", msg);
            r.headers_mut().insert(UPLOAD_OFFSET, HeaderValue::from(at));
            r
        }
        MediaError::HashMismatch => refuse(StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch", msg),
        MediaError::ChecksumMismatch => {
            refuse(StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST), "checksum_mismatch", msg)
        }
        MediaError::UnsupportedType(_) => refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type", msg),
        MediaError::Io(_) | MediaError::Store(_) => {
            tracing::error!(error = %msg, "media request failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
        }
    }
}

fn blobs<S: Storage>(hub: &Hub<S>) -> Result<&Blobs<S>, Fail> {
    hub.blobs.as_ref().ok_or_else(|| refuse(StatusCode::NOT_FOUND, "not_found", "media is not served here"))
}

fn blob_id(sha: &str) -> Result<BlobId, Fail> {
    BlobId::parse(sha).ok_or_else(|| {
        refuse(StatusCode::BAD_REQUEST, "bad_request", "the blob name must be 64 lowercase hex digits (its SHA-256)")
    })
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Result<u64, Fail> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "bad_request", format!("send {name}: a byte count")))
}

/// Checks the token; then whether the user may use `blob` (uploaded it, or it was sent in
/// a room they may read).
async fn caller<S: Storage>(hub: &Hub<S>, headers: &HeaderMap, peer: SocketAddr) -> Result<Claims, Fail> {
    crate::api::bearer(hub, headers, peer).await.map_err(|e| Box::new(e.into_response()))
}

/// A request about one blob: the store, who asks (token checked) and which blob.
struct BlobCall<'a, S: Storage> {
    blobs: &'a Blobs<S>,
    claims: Claims,
    blob: BlobId,
}

impl<S: Storage> BlobCall<'_, S> {
    /// Uploads over HTTP belong to the token's user.
    fn owner(&self) -> Owner {
        Owner::User(self.claims.sub.clone())
    }
}

async fn blob_call<'a, S: Storage>(
    hub: &'a Hub<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
    sha: &str,
) -> Result<BlobCall<'a, S>, Fail> {
    let blobs = blobs(hub)?;
    let claims = caller(hub, headers, peer).await?;
    Ok(BlobCall { blobs, claims, blob: blob_id(sha)? })
}

async fn may_use<S: Storage>(hub: &Hub<S>, blobs: &Blobs<S>, claims: &Claims, blob: BlobId) -> Result<bool, Fail> {
    let policy = hub.config.policy.clone();
    let c = claims.clone();
    blobs
        .may_use(&claims.sub, blob, move |room| policy.check(&c, Action::History { room }).is_ok())
        .await
        .map_err(media_error)
}

fn upload_headers(status: StatusCode, blob: BlobId, up: Upload) -> Response {
    let mut r = status.into_response();
    let h = r.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(up.offset()));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(up.size()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("/api/media/{blob}")) {
        h.insert(header::LOCATION, v);
    }
    r
}

async fn create<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let go = async {
        let blobs = blobs(&hub)?;
        let claims = caller(&hub, &headers, peer).await?;
        let size = header_u64(&headers, &UPLOAD_LENGTH)?;
        let sha = headers.get(&UPLOAD_SHA256).and_then(|v| v.to_str().ok()).unwrap_or("");
        let blob = blob_id(sha)?;
        let may = may_use(&hub, blobs, &claims, blob).await?;
        let up = blobs.begin(&Owner::User(claims.sub.clone()), blob, size, may).await.map_err(media_error)?;
        let status = if matches!(up, Upload::Complete { .. }) { StatusCode::OK } else { StatusCode::CREATED };
        Ok::<_, Fail>(upload_headers(status, blob, up))
    };
    go.await.unwrap_or_else(|r| *r)
}

async fn head<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    let go = async {
        let c = blob_call(&hub, &headers, peer, &sha).await?;
        let may = may_use(&hub, c.blobs, &c.claims, c.blob).await?;
        let up = c.blobs.state(&c.owner(), c.blob, may).await.map_err(media_error)?;
        Ok::<_, Fail>(upload_headers(StatusCode::OK, c.blob, up))
    };
    go.await.unwrap_or_else(|r| *r)
}

async fn patch<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sha): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let go = async {
        let c = blob_call(&hub, &headers, peer, &sha).await?;
        let offset = header_u64(&headers, &UPLOAD_OFFSET)?;
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.eq_ignore_ascii_case("application/offset+octet-stream") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send the chunk with Content-Type: application/offset+octet-stream",
            ));
        }
        let checksum = headers.get(&UPLOAD_CHECKSUM).map(parse_checksum).transpose()?;
        // The body is written to disk as it arrives (never whole in memory).
        let max = hub.config.media.max_chunk_bytes;
        let stream = body.into_data_stream();
        let up = c.blobs.write_stream(&c.owner(), c.blob, offset, stream, max, checksum).await.map_err(media_error)?;
        Ok::<_, Fail>(upload_headers(StatusCode::NO_CONTENT, c.blob, up))
    };
    go.await.unwrap_or_else(|r| *r)
}

/// The device gave up an upload (tus termination): its bytes and row go, and it
/// no longer counts against the user's limits. A complete blob is not touched.
async fn abandon<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    let go = async {
        let c = blob_call(&hub, &headers, peer, &sha).await?;
        c.blobs.abandon(&c.owner(), c.blob).await.map_err(media_error)?;
        Ok::<_, Fail>(StatusCode::NO_CONTENT.into_response())
    };
    go.await.unwrap_or_else(|r| *r)
}

/// `Upload-Checksum: sha256 BASE64` (the tus checksum extension): the chunk's digest.
fn parse_checksum(v: &HeaderValue) -> Result<[u8; 32], Fail> {
    use base64::Engine as _;
    let bad =
        || refuse(StatusCode::BAD_REQUEST, "bad_request", "Upload-Checksum must be \"sha256 BASE64\" of the chunk");
    let (algo, b64) = v.to_str().ok().and_then(|s| s.trim().split_once(' ')).ok_or_else(bad)?;
    if !algo.eq_ignore_ascii_case("sha256") {
        return Err(bad());
    }
    let want = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| bad())?;
    <[u8; 32]>::try_from(want.as_slice()).map_err(|_| bad())
}

/// Checks token and access, then returns the blob's metadata (404 for both an unknown
/// blob and one the caller may not see: existence is not revealed).
async fn visible<S: Storage>(
    hub: &Hub<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
    sha: &str,
) -> Result<(BlobId, Option<outpost_storage::BlobRecord>), Fail> {
    let c = blob_call(hub, headers, peer, sha).await?;
    if !may_use(hub, c.blobs, &c.claims, c.blob).await? {
        return Err(media_error(MediaError::NotFound(c.blob)));
    }
    Ok((c.blob, c.blobs.info(c.blob).await.map_err(media_error)?))
}

/// A device wants `blob`, which this server knows only from a message: a hub with an
/// uplink asks the cloud for it (a hub rebuilt from the cloud gets older files this way,
/// on demand). Whether it is now asked for.
fn ask_upstream<S: Storage>(hub: &Hub<S>, blobs: &Blobs<S>, blob: BlobId) -> bool {
    !hub.config.uplink.cloud.is_empty() && blobs.want(blob)
}

async fn info<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    let go = async {
        let (blob, info) = visible(&hub, &headers, peer, &sha).await?;
        let blobs = blobs(&hub)?;
        let body = match info {
            Some(i) if i.evicted => json!({
                "sha256": blob.hex(), "size": i.size, "type": i.mime, "available": false,
                "received": blobs.received(blob).await.map_err(media_error)?,
                "custody": if i.peers.is_empty() { "stored" } else { "forwarded" },
                "preview": i.preview.is_some(), "evicted": true,
                "requested": hub.config.media.retention_basis == RetentionBasis::PeerConfirmed
                    && ask_upstream(&hub, blobs, blob),
            }),
            Some(i) => json!({
                "sha256": blob.hex(), "size": i.size, "type": i.mime, "available": true,
                "received": i.size,
                "custody": if i.peers.is_empty() { "stored" } else { "forwarded" },
                "preview": i.preview.is_some(), "evicted": false,
            }),
            None => json!({
                "sha256": blob.hex(), "size": null, "type": null, "available": false,
                "received": blobs.received(blob).await.map_err(media_error)?,
                "custody": null, "preview": false, "evicted": false,
                "requested": ask_upstream(&hub, blobs, blob),
            }),
        };
        Ok::<_, Fail>(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
    };
    go.await.unwrap_or_else(|r| *r)
}

async fn preview<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    let go = async {
        let (blob, _) = visible(&hub, &headers, peer, &sha).await?;
        match blobs(&hub)?.preview(blob).await.map_err(media_error)? {
            Some(jpeg) => Ok::<_, Fail>(
                ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=86400")], jpeg)
                    .into_response(),
            ),
            None => Err(refuse(StatusCode::NOT_FOUND, "not_found", "this blob has no preview")),
        }
    };
    go.await.unwrap_or_else(|r| *r)
}

async fn download<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    let go = async {
        let (blob, info) = visible(&hub, &headers, peer, &sha).await?;
        let info = match info {
            Some(i) if !i.evicted => i,
            Some(_) => {
                let why = match hub.config.media.retention_basis {
                    // A hub asks its cloud for it again (a device wants it now).
                    RetentionBasis::PeerConfirmed if ask_upstream(&hub, blobs(&hub)?, blob) => {
                        "removed from this hub by retention after the cloud confirmed it; asked the cloud for it again; see /info for progress"
                    }
                    RetentionBasis::PeerConfirmed => {
                        "removed from this server by retention after the other side confirmed it; fetch it there"
                    }
                    RetentionBasis::Received => {
                        "removed from this server by retention (media.retention_days after it arrived); only its preview is kept"
                    }
                };
                return Err(refuse(StatusCode::NOT_FOUND, "not_found", why));
            }
            None => {
                let why = if ask_upstream(&hub, blobs(&hub)?, blob) {
                    "not on this hub yet; asked the cloud for it; see /info for progress"
                } else {
                    "not arrived yet; see /info for progress"
                };
                return Err(refuse(StatusCode::NOT_FOUND, "not_found", why));
            }
        };
        let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(|r| parse_range(r, info.size));
        let (start, end, status) = match range {
            None => (0, info.size, StatusCode::OK),
            Some(Some((s, e))) => (s, e, StatusCode::PARTIAL_CONTENT),
            Some(None) => {
                let mut r = refuse(StatusCode::RANGE_NOT_SATISFIABLE, "bad_request", "the range is outside the file");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", info.size)) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Err(r);
            }
        };
        let stream = blobs(&hub)?.read_range(blob, start, end).await.map_err(media_error)?;
        let mut r = (status, axum::body::Body::from_stream(stream)).into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&info.mime) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400"));
        // The type was checked by content; never let a browser guess another.
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if status == StatusCode::PARTIAL_CONTENT
            && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, info.size))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
        Ok::<_, Fail>(r)
    };
    go.await.unwrap_or_else(|r| *r)
}

/// `bytes=N-` or `bytes=N-M` (one range) as a half-open span; None when unsatisfiable.
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => size,
        e => e.parse::<u64>().ok()?.saturating_add(1).min(size),
    };
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 10)));
        assert_eq!(parse_range("bytes=4-", 10), Some((4, 10)));
        assert_eq!(parse_range("bytes=4-5", 10), Some((4, 6)));
        assert_eq!(parse_range("bytes=4-99", 10), Some((4, 10)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=-5", 10), None);
        assert_eq!(parse_range("items=0-", 10), None);
    }
}
