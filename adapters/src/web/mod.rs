//! The web progress view: the pages Stepwise serves — the task list at `/`, a task's page at
//! `/tasks/{task_id}`, sign-in at `/login` — their static assets under `/assets/`, and the
//! service worker at `/sw.js` (at Stepwise's root, so that its scope is all of Stepwise's
//! pages: it shows web push messages and posts their Approve / Reject links), all compiled
//! into the binary (plain HTML, CSS and JavaScript from `adapters/web/`; no build step: the
//! scripts are ES modules that import one another by relative path, each served as an
//! asset of its own). The pages need no token to load: their script keeps the token in the
//! browser's `localStorage`, calls the API with `Authorization: Bearer` and follows tasks
//! over the WebSocket API, offering the token as a subprotocol.
//!
//! An application that embeds Stepwise may mount it under a path of its own and sign its
//! users in itself ([`crate::embed`]). A [`Site`] renders the pages once for that: their
//! links carry the mount path, and their `<meta name="stepwise">` tells the scripts where
//! the API is and whether to ask for a token; with the application's sign-in there is no
//! sign-in page, and the browser's own cookies go with every call.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, workers, styles and
//! connections from this origin only), an ETag, and `Cache-Control: no-cache`, so a new binary's pages
//! are picked up at once while unchanged ones cost a 304. Unknown paths, including unknown
//! assets, keep the server's JSON 404.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::mount::MountPath;

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
/// lets them register `sw.js`), no inline script or style, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The routes at fixed paths, as `(path, file)`: the pages and the service worker.
const PAGES: &[(&str, &Asset)] =
    &[("/", &LIST_PAGE), ("/tasks/{task_id}", &TASK_PAGE), ("/login", &LOGIN_PAGE), ("/sw.js", &SERVICE_WORKER)];

/// What the pages' `<meta name="stepwise">` says at the root to visitors with tokens; a
/// [`Site`] elsewhere or for an application's users says otherwise.
const SITE_META: &str = r#"<meta name="stepwise" data-root="" data-sign-in="token">"#;

/// A file as served: its body, and the ETag of that body.
struct Served {
    content_type: &'static str,
    body: web::Bytes,
    etag: String,
}

impl Served {
    fn new(asset: &Asset, body: web::Bytes) -> Served {
        let hex: String = Sha256::digest(&body).iter().take(12).map(|b| format!("{b:02x}")).collect();
        Served { content_type: asset.content_type, body, etag: format!("\"{hex}\"") }
    }

    fn unchanged(asset: &Asset) -> Served {
        Served::new(asset, web::Bytes::from_static(asset.body))
    }

    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let tag = self.etag.as_str();
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
        response.content_type(self.content_type).body(self.body.clone())
    }
}

/// The pages and assets as served at one mount path to visitors signed in one way: built
/// once, shared by every worker.
pub struct Site {
    /// `(path, file)`, as [`PAGES`] less the sign-in page where the application signs
    /// visitors in.
    pages: Vec<(&'static str, Served)>,
    /// Everything under `/assets/`, by name.
    assets: Vec<(&'static str, Served)>,
}

impl Site {
    /// The pages under `mount`, whose script asks visitors for an API token or, when
    /// `by_application`, relies on the application having signed them in (its cookies go
    /// with every request). At the root with tokens they are the files as they are; else
    /// their links and the `<meta name="stepwise">` the scripts read say where and how.
    pub fn new(mount: &MountPath, by_application: bool) -> Site {
        let meta = format!(
            r#"<meta name="stepwise" data-root="{mount}" data-sign-in="{}">"#,
            if by_application { "application" } else { "token" }
        );
        let render = |asset: &Asset| {
            if asset.content_type != HTML || (mount.is_root() && !by_application) {
                return Served::unchanged(asset);
            }
            let text = String::from_utf8_lossy(asset.body);
            // Links first: the meta's own root would otherwise be taken for one.
            let text = text.replace("=\"/", &format!("=\"{mount}/")).replace(SITE_META, &meta);
            Served::new(asset, text.into())
        };
        let pages = PAGES
            .iter()
            .filter(|(path, _)| !(by_application && *path == "/login"))
            .map(|(path, page)| (*path, render(page)))
            .collect();
        let assets = ASSETS.iter().map(|asset| (asset.name, Served::unchanged(asset))).collect();
        Site { pages, assets }
    }
}

/// Registers the pages, the service worker and `/assets/{name}` of `site`; they answer GET
/// and HEAD, and other methods with the API's JSON 405.
pub fn configure(config: &mut web::ServiceConfig, site: &Arc<Site>) {
    for (index, (path, _)) in site.pages.iter().enumerate() {
        let site = Arc::clone(site);
        let serve = move |req: HttpRequest| {
            let site = Arc::clone(&site);
            async move { site.pages[index].1.respond(&req) }
        };
        config.service(
            web::resource(*path)
                .route(web::get().to(serve.clone()))
                .route(web::head().to(serve))
                .default_service(web::to(method_not_allowed)),
        );
    }
    let site = Arc::clone(site);
    let asset = move |req: HttpRequest, name: web::Path<String>| {
        let site = Arc::clone(&site);
        async move {
            match site.assets.iter().find(|(n, _)| *n == name.as_str()) {
                Some((_, asset)) => Ok(asset.respond(&req)),
                None => Err(ApiError::NoRoute(req.path().to_owned())),
            }
        }
    };
    config.service(
        web::resource("/assets/{name}")
            .route(web::get().to(asset.clone()))
            .route(web::head().to(asset))
            .default_service(web::to(method_not_allowed)),
    );
}

/// The API's JSON 405, with the methods the pages answer.
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let error = ApiError::MethodNotAllowed { method: req.method().to_string(), path: req.path().to_owned() };
    let mut response = actix_web::ResponseError::error_response(&error);
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    response
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

    fn page<'a>(site: &'a Site, path: &str) -> Option<&'a str> {
        let (_, served) = site.pages.iter().find(|(p, _)| *p == path)?;
        Some(std::str::from_utf8(&served.body).expect("text"))
    }

    #[test]
    fn pages_at_the_root_with_tokens_are_the_files_as_they_are() {
        let site = Site::new(&MountPath::root(), false);
        for (path, file) in PAGES {
            assert_eq!(page(&site, path).map(str::as_bytes), Some(file.body), "{path}");
            assert!(file.content_type != HTML || page(&site, path).unwrap().contains(SITE_META), "{path}");
        }
    }

    #[test]
    fn pages_under_a_mount_path_link_under_it_and_say_how_visitors_sign_in() {
        let mount = MountPath::new("/steps").unwrap();
        let site = Site::new(&mount, true);
        assert_eq!(page(&site, "/login"), None, "the application signs its users in");
        let meta = r#"<meta name="stepwise" data-root="/steps" data-sign-in="application">"#;
        for path in ["/", "/tasks/{task_id}"] {
            let html = page(&site, path).unwrap();
            assert!(html.contains(meta), "{path}");
            assert!(html.contains(r#"<script type="module" src="/steps/assets/"#), "{path}");
            // Every absolute link is under the mount path; in-page links stay as they are.
            let html = html.replace(meta, "");
            assert!(html.matches("=\"/").count() > 3, "{path}");
            assert_eq!(html.matches("=\"/").count(), html.matches("=\"/steps/").count(), "{path}");
            assert!(html.contains(r##"href="#main""##), "{path}");
        }
        let with_tokens = Site::new(&mount, false);
        assert!(page(&with_tokens, "/login").unwrap().contains(r#"data-root="/steps" data-sign-in="token""#));
        let etag = |site: &Site| site.pages[0].1.etag.clone();
        assert_ne!(etag(&site), etag(&Site::new(&MountPath::root(), false)), "another body, another ETag");
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
