//! The web UI: the static files Vite builds from `ui/` into `ui/dist`,
//! embedded in the binary at compile time, so a server needs nothing else
//! at run time and `cargo build` needs no Node.js (the built files are
//! committed; `scripts/build-ui.sh` rebuilds them).
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `GET /index.html`, `GET /ui/`, `GET /ui/index.html` | the page (`Cache-Control: no-cache`) |
//! | `GET /ui/{path}` | a built file; those under `assets/` carry a content hash in their name and are cached for a year |
//!
//! The page is a single-page app that routes on the URL fragment
//! (`#/map`, `#/search?...`, `#/trace/{id}`, `#/histogram?...`), so every
//! view is a link the server never has to know. It reads only the
//! documented JSON APIs (`/v1/openapi.json`). Text files go gzipped to
//! clients that accept it, compressed once on first request.
//!
//! These routes need no API key (the page holds no data; its API calls
//! do) and sit outside the query concurrency limit.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};
use tracelake_routes::{Access, Routes};

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../ui/dist");

/// Where the page's own files are served.
pub const PREFIX: &str = "/ui/";

/// The UI's routes: its page and files are open to anyone (its API calls
/// need a key).
pub fn routes() -> Routes {
    Routes::new()
        .route("/", get(index), Access::Open)
        .route("/index.html", get(index), Access::Open)
        .route("/ui", get(index), Access::Open)
        .route("/ui/", get(index), Access::Open)
        .route("/ui/{*path}", get(file), Access::Open)
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).await
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers).await
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json" | "map") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(path: &str) -> bool {
    content_type(path).starts_with("text/")
        || matches!(content_type(path), "image/svg+xml" | "application/json")
}

/// Gzipped copies of the text files, made once (off the reactor: best
/// compression of the script takes tens of milliseconds).
static GZIPPED: OnceLock<HashMap<&'static str, Vec<u8>>> = OnceLock::new();

fn compress_all() -> HashMap<&'static str, Vec<u8>> {
    let mut cache = HashMap::new();
    let mut pending = vec![&DIST];
    while let Some(dir) = pending.pop() {
        for entry in dir.entries() {
            if let Some(child) = entry.as_dir() {
                pending.push(child);
            } else if let Some(file) = entry.as_file()
                && let Some(name) = file.path().to_str()
                && compressible(name)
            {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                if encoder.write_all(file.contents()).is_ok()
                    && let Ok(compressed) = encoder.finish()
                    && compressed.len() < file.contents().len()
                {
                    cache.insert(name, compressed);
                }
            }
        }
    }
    cache
}

async fn gzipped() -> &'static HashMap<&'static str, Vec<u8>> {
    if let Some(cache) = GZIPPED.get() {
        return cache;
    }
    match tokio::task::spawn_blocking(|| GZIPPED.get_or_init(compress_all)).await {
        Ok(cache) => cache,
        // The compression task panicked: serve uncompressed from now on.
        Err(_) => GZIPPED.get_or_init(HashMap::new),
    }
}

async fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = DIST.get_file(path).filter(|_| !path.contains("..")) else {
        return (StatusCode::NOT_FOUND, format!("no UI file {PREFIX}{path}")).into_response();
    };
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let compressed = if crate::api::header_lists(headers, header::ACCEPT_ENCODING, "gzip") {
        gzipped().await.get(path)
    } else {
        None
    };
    let mut response = match compressed {
        Some(compressed) => {
            let mut response = compressed.as_slice().into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        }
        None => file.contents().into_response(),
    };
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response_headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get_path(path: &str, gzip: bool) -> Response {
        let mut request = Request::builder().uri(path);
        if gzip {
            request = request.header(header::ACCEPT_ENCODING, "br, gzip;q=0.9");
        }
        routes()
            .into_router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_from_the_binary() {
        let page = get_path("/", false).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        let body = to_bytes(page.into_body(), usize::MAX).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        let script = html
            .split('"')
            .find(|part| part.starts_with("/ui/assets/") && part.ends_with(".js"))
            .expect("the page loads a built script")
            .to_string();
        let asset = get_path(&script, true).await;
        assert_eq!(asset.status(), StatusCode::OK);
        assert_eq!(asset.headers()[header::CONTENT_ENCODING], "gzip");
        assert!(
            asset.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        assert!(
            asset.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        let plain = get_path(&script, false).await;
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let compressed = to_bytes(asset.into_body(), usize::MAX).await.unwrap();
        let original = to_bytes(plain.into_body(), usize::MAX).await.unwrap();
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut decoded,
        )
        .unwrap();
        assert_eq!(decoded, original.to_vec());
    }

    #[tokio::test]
    async fn unknown_files_are_404_with_a_message() {
        for path in ["/ui/nothing.js", "/ui/../Cargo.toml", "/ui/assets/"] {
            let response = get_path(path, false).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
