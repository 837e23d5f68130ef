//! The web progress view: the pages the server itself serves — the task list at `/`, a
//! task's page at `/tasks/{task_id}`, sign-in at `/login` — their static assets under
//! `/assets/`, and the service worker at `/sw.js` (at the root, so that its scope is the
//! whole site: it shows web push messages and posts their Approve / Reject links), all
//! compiled into the binary (plain HTML, CSS and JavaScript from
//! `adapters/web/`; no build step: the scripts are ES modules that import one another by
//! relative path, each served as an asset of its own). The pages need no token to load: their script keeps the
//! token in the browser's `localStorage`, calls the API with `Authorization: Bearer` and
//! follows tasks over the WebSocket API, offering the token as a subprotocol.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, workers, styles and
//! connections from this origin only), an ETag, and `Cache-Control: no-cache`, so a new binary's pages
//! are picked up at once while unchanged ones cost a 304. Unknown paths, including unknown
//! assets, keep the server's JSON 404.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;

/// A file served as is.
struct Asset {
    /// Its name in `adapters/web/` (and under `/assets/`, except for pages).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// A script, named as in `adapters/web/`.
macro_rules! script {
    ($name:literal) => {
        Asset { name: $name, content_type: JS, body: include_bytes!(concat!("../../web/", $name)) }
    };
}

/// The task list.
const LIST_PAGE: Asset = Asset { name: "index.html", content_type: HTML, body: include_bytes!("../../web/index.html") };
/// A task's page.
const TASK_PAGE: Asset = Asset { name: "task.html", content_type: HTML, body: include_bytes!("../../web/task.html") };
/// Sign-in and sign-out.
const LOGIN_PAGE: Asset =
    Asset { name: "login.html", content_type: HTML, body: include_bytes!("../../web/login.html") };
/// The service worker.
const SERVICE_WORKER: Asset = script!("sw.js");

/// Everything under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../web/app.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_bytes!("../../web/icon.svg") },
    // The pages' own scripts.
    script!("list.js"),
    script!("task.js"),
    script!("login.js"),
    script!("chat.js"),
    // The modules they share.
    script!("api.js"),
    script!("debug.js"),
    script!("dom.js"),
    script!("live.js"),
    script!("model.js"),
    script!("notify.js"),
    script!("push.js"),
    script!("words.js"),
];

/// What the pages may load and connect to: this origin only (`'self'` covers the module
/// scripts a page's script imports, and this origin's `ws:` and `wss:` addresses; `worker-src`
/// lets them register `/sw.js`), no inline script or style, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The routes at fixed paths, as `(path, file)`: the pages and the service worker.
const PAGES: &[(&str, &Asset)] =
    &[("/", &LIST_PAGE), ("/tasks/{task_id}", &TASK_PAGE), ("/login", &LOGIN_PAGE), ("/sw.js", &SERVICE_WORKER)];

/// Registers the pages, the service worker and `/assets/{name}`; they answer GET and HEAD,
/// and other methods with the API's JSON 405.
pub fn configure(config: &mut web::ServiceConfig) {
    for (path, page) in PAGES {
        let page: &'static Asset = page;
        let serve = move |req: HttpRequest| async move { serve(&req, page) };
        config.service(
            web::resource(*path)
                .route(web::get().to(serve))
                .route(web::head().to(serve))
                .default_service(web::to(method_not_allowed)),
        );
    }
    config.service(
        web::resource("/assets/{name}")
            .route(web::get().to(asset))
            .route(web::head().to(asset))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn asset(req: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match ASSETS.iter().find(|a| a.name == name.as_str()) {
        Some(asset) => Ok(serve(&req, asset)),
        None => Err(ApiError::NoRoute(req.path().to_owned())),
    }
}

/// The API's JSON 405, with the methods the pages answer.
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let error = ApiError::MethodNotAllowed { method: req.method().to_string(), path: req.path().to_owned() };
    let mut response = actix_web::ResponseError::error_response(&error);
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    response
}

/// The ETag of a compiled-in file: a prefix of its SHA-256, computed once per file.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let all = PAGES.iter().map(|(_, page)| *page).chain(ASSETS.iter());
        all.map(|a| {
            let hex: String = Sha256::digest(a.body).iter().take(12).map(|b| format!("{b:02x}")).collect();
            (a.name, format!("\"{hex}\""))
        })
        .collect()
    });
    tags.iter().find(|(name, _)| *name == asset.name).map_or("\"0\"", |(_, tag)| tag.as_str())
}

fn serve(req: &HttpRequest, asset: &Asset) -> HttpResponse {
    let tag = etag(asset);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY));
    if fresh {
        return response.finish();
    }
    // actix-web sends only the head (with the length) when answering HEAD.
    response.content_type(asset.content_type).body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files `text` loads from `/assets/`: a module's imports (`from "./name"`) and a
    /// page's scripts and images (`src="/assets/name"`).
    fn loads(text: &str) -> Vec<&str> {
        let imports = text.split("from \"./").skip(1);
        let sources = text.split("src=\"/assets/").skip(1);
        imports.chain(sources).filter_map(|rest| rest.split('"').next()).collect()
    }

    #[test]
    fn every_file_a_page_or_a_module_loads_is_served() {
        let files = PAGES.iter().map(|(_, page)| *page).chain(ASSETS);
        for file in files {
            let text = std::str::from_utf8(file.body).expect("text");
            for name in loads(text) {
                assert!(ASSETS.iter().any(|a| a.name == name), "{} loads {name}, which is not served", file.name);
            }
        }
    }
}
