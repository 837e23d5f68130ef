//! Stepwise inside an actix-web application of your own: its API, WebSockets and pages
//! mounted under a path the application chooses (`/stepwise/api/tasks`,
//! `/stepwise/ws/tasks/{id}`, `/stepwise/tasks/{id}`), its users signed in the
//! application's way. The `stepwise` binary serves the same [`Stepwise`] at the root with
//! API tokens (`crate::http::server`).
//!
//! The application starts a [`runtime::Runtime`] with its own step kinds
//! ([`runtime::Handlers::with`]), then [`Stepwise::start`] inside its actix system, and calls
//! [`Stepwise::configure`] in its `App` factory. When its server has stopped, it calls
//! `runtime.shutdown().await` so that running steps stop and their progress is written.
//! Its `HttpServer` should also call [`crate::http::drop_when_stalled`] from `on_connect`, so
//! that a WebSocket client that stops reading is dropped after `api.ws_client_timeout_s`.
//! `adapters/examples/host_app` is a whole application doing this.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use config::{ApiSettings, NotificationSettings};
use runtime::Runtime;

pub use crate::api::auth::{Authenticate, Refusal, SignIn};
use crate::api::{self, ApiState};
pub use crate::mount::{MountPath, MountPathError};
use crate::notify::email::EmailError;
use crate::notify::{Notifier, NotifyConfig};
use crate::web::Site;

/// How Stepwise is mounted; the defaults are the stand-alone server's.
pub struct Options {
    /// Where Stepwise lives in the application's URL space (default: the root).
    pub mount: MountPath,
    /// How requests are authenticated (default: API tokens).
    pub sign_in: SignIn,
    /// The `[api]` settings: limits, origins, and the step kinds plans may use over the API
    /// (an application's own kind must be listed there to be used by its users).
    pub api: ApiSettings,
    /// The `[notifications]` settings. `public_url`, if set, is where people reach
    /// Stepwise's pages, the mount path included (e.g. `https://app.example/stepwise`).
    pub notifications: NotificationSettings,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mount: MountPath::root(),
            sign_in: SignIn::Tokens,
            api: ApiSettings::default(),
            notifications: NotificationSettings::default(),
        }
    }
}

/// Stepwise's routes, ready to be registered in every worker's `App`; cheap to clone.
#[derive(Clone)]
pub struct Stepwise {
    state: web::Data<ApiState>,
    site: Arc<Site>,
}

impl Stepwise {
    /// Stepwise over `runtime`, for a server listening on `listening` (links in
    /// notifications default to it and the mount path). Starts the notifier on the current
    /// arbiter: call it inside the actix system. Fails only when email is configured and
    /// cannot be set up.
    pub fn start(runtime: Runtime, listening: SocketAddr, options: Options) -> Result<Stepwise, EmailError> {
        let Options { mount, sign_in, api, notifications } = options;
        let notifications = NotifyConfig::new(notifications, listening, mount.clone());
        Notifier::start(&runtime, notifications.clone())?;
        let site = Arc::new(Site::new(&mount, sign_in.by_application()));
        let state = web::Data::new(ApiState::new(runtime, mount, sign_in, api, notifications));
        Ok(Stepwise { state, site })
    }

    /// Where Stepwise is mounted.
    pub fn mount(&self) -> &MountPath {
        &self.state.mount
    }

    /// Registers the API, the WebSockets and the pages under the mount path. Under a path,
    /// unknown paths below it answer Stepwise's JSON 404, and the path itself redirects to
    /// the task list (`/stepwise` → `/stepwise/`).
    pub fn configure(&self, config: &mut web::ServiceConfig) {
        let mount = self.mount();
        if mount.is_root() {
            config.app_data(self.state.clone());
            self.services(config);
            return;
        }
        let list = mount.join("/");
        let to_list = move || {
            let list = list.clone();
            async move { HttpResponse::PermanentRedirect().insert_header((header::LOCATION, list)).finish() }
        };
        config.service(
            web::scope(mount.as_str())
                .wrap(actix_web::middleware::from_fn(crate::observe::requests))
                .app_data(self.state.clone())
                .configure(|scope| self.services(scope))
                .service(web::resource("").route(web::get().to(to_list.clone())).route(web::head().to(to_list)))
                .default_service(web::to(api::no_route)),
        );
    }

    fn services(&self, config: &mut web::ServiceConfig) {
        config.service(api::get_only("/metrics", web::get().to(crate::metrics::serve)));
        api::configure(config);
        crate::web::configure(config, &self.site);
    }
}
