//! The web dashboard (issue 13): `/ui/` serves a single-page app whose files are compiled into
//! the binary (`ui/`), so nothing is loaded from anywhere else at run time. The pages hold no
//! data and need no token; the app signs in with an operator token and calls the `/v1` API
//! with it. Every answer carries a strict Content-Security-Policy (scripts only from the app's
//! own file, no inline script, no other origin) and refuses to be framed.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::{Api, AppError};

/// One embedded file of the app.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("ui/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("ui/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("ui/favicon.svg"),
    },
];

/// Only this origin, and no inline script or style: a token in the page cannot be sent away
/// by injected markup.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The dashboard's routes: `/ui` (a redirect), `/ui/` and `/ui/{file}`.
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                serve(&file, &headers)
            }),
        )
}

/// The embedded file `name`, revalidated by its ETag on each load (the files are small, and a
/// new binary must never leave an old script running against a new API).
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return AppError::new(StatusCode::NOT_FOUND, "not_found", "no such dashboard file")
            .into_response();
    };
    let etag = format!("\"{:016x}\"", fnv1a(asset.body));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = match fresh {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response(),
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// FNV-1a, 64 bits: a cheap fingerprint of a file for its ETag (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_the_security_headers() {
        for asset in ASSETS {
            let r = serve(asset.name, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{}", asset.name);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert!(h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .is_ok_and(|c| c.contains("script-src 'self'")));
        }
        assert_eq!(
            serve("secrets.txt", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn an_unchanged_file_is_not_sent_again() {
        let first = serve("app.js", &HeaderMap::new());
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, first.headers()[header::ETAG].clone());
        assert_eq!(serve("app.js", &headers).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn nothing_is_loaded_from_another_origin() {
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            // The SVG namespace is an identifier, not a load.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{} refers to another origin",
                asset.name
            );
        }
    }
}
