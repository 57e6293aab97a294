//! The embedded web client: plain HTML, CSS and ES modules from `relay/web/`, compiled
//! into the binary (no build step, no Node needed to build the hub) and served at `/` by
//! the hub and the cloud alike.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "../relay/web/"]
struct Assets;

/// Serves an embedded file; `/` is `index.html`.
pub(crate) async fn asset(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match Assets::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_owned();
            // The service worker must always be checked for updates; the rest is
            // versioned by the service worker's cache.
            let cache = if path == "sw.js" || path == "index.html" { "no-cache" } else { "max-age=300" };
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, cache.to_owned())], file.data.into_owned())
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
