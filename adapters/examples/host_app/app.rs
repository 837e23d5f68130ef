//! The example's application, everything but `main`: its own sign-in (a session cookie), its
//! own step kind, and its server with Stepwise mounted under `/stepwise`. The integration
//! test `embed` builds this same server (it includes this file), so what the example shows
//! is what is tested.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use adapters::embed::{Authenticate, MountPath, Options, Refusal, SignIn, Stepwise};
use config::ApiSettings;
use futures_util::future::LocalBoxFuture;
use runtime::{Handlers, StepContext, StepError, StepHandler};
use serde_json::Value;

/// Where the application mounts Stepwise.
pub const MOUNT: &str = "/stepwise";

/// The application's session cookie.
pub const SESSION_COOKIE: &str = "host_session";

/// The application's own step kind.
pub const EXPORT_KIND: &str = "export_orders";

/// The application's sessions, session id → user name. A real application keeps them in
/// its database or signs them; what matters here is that Stepwise asks it who is who.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, String>>>);

impl Sessions {
    /// Signs `user` in: the new session's id, for the cookie.
    pub fn sign_in(&self, user: &str) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone(), user.to_owned());
        id
    }

    /// The user whose session cookie `req` carries.
    fn user(&self, req: &HttpRequest) -> Option<String> {
        let cookies = req.headers().get_all(header::COOKIE).filter_map(|v| v.to_str().ok());
        let id = cookies
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))?;
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }
}

/// Stepwise asks the application who makes each request: the session's user owns the tasks
/// they create, and sees only those.
impl Authenticate for Sessions {
    fn authenticate<'a>(&'a self, req: &'a HttpRequest) -> LocalBoxFuture<'a, Result<String, Refusal>> {
        let user =
            self.user(req).ok_or_else(|| Refusal(format!("sign in at / first: no valid {SESSION_COOKIE} cookie")));
        Box::pin(async move { user })
    }
}

/// Exports the application's orders in batches; params `{"batches": 1 to 100,
/// "ms_per_batch": 1 to 60000}`. Each batch is a log line and a step of the bar.
pub struct ExportOrders;

impl StepHandler for ExportOrders {
    fn validate(&self, params: &Value) -> Result<(), String> {
        let in_range =
            |key: &str, max: u64| params.get(key).and_then(Value::as_u64).is_some_and(|n| (1..=max).contains(&n));
        match (in_range("batches", 100), in_range("ms_per_batch", 60_000)) {
            (true, true) => Ok(()),
            _ => Err(format!(
                "export_orders takes {{\"batches\": 1 to 100, \"ms_per_batch\": 1 to 60000}}, got {params}"
            )),
        }
    }

    fn run(&self, mut ctx: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        Box::pin(async move {
            let batches = ctx.params()["batches"].as_u64().unwrap_or(1);
            let pause = Duration::from_millis(ctx.params()["ms_per_batch"].as_u64().unwrap_or(100));
            for batch in 1..=batches {
                ctx.checkpoint().await?; // waits here while the task is paused
                tokio::time::sleep(pause).await;
                ctx.log(runtime::LogStream::Runtime, &format!("exported batch {batch} of {batches}"));
                ctx.progress(u8::try_from(batch * 100 / batches).unwrap_or(100));
            }
            Ok(Some(format!("{batches} batches exported")))
        })
    }
}

/// The step kinds: Stepwise's own and the application's.
pub fn handlers() -> Handlers {
    Handlers::builtin(20).with(EXPORT_KIND, ExportOrders)
}

/// How the application mounts Stepwise: under [`MOUNT`], its users signed in by
/// [`Sessions`], its own kind allowed in plans sent to the API.
pub fn options(sessions: &Sessions) -> Options {
    let mut api = ApiSettings::default();
    api.step_kinds.push(EXPORT_KIND.to_owned());
    Options {
        mount: MountPath::new(MOUNT).expect("a valid mount path"),
        sign_in: SignIn::Application(Box::new(sessions.clone())),
        api,
        ..Options::default()
    }
}

/// The application's server on `listener`: its own pages at `/` and `/login`, Stepwise
/// under [`MOUNT`].
pub fn server(listener: TcpListener, sessions: Sessions, stepwise: Stepwise) -> std::io::Result<Server> {
    let stalled_after = std::time::Duration::from_secs(ApiSettings::default().ws_client_timeout_s);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(sessions.clone()))
            .route("/", web::get().to(home))
            .route("/login", web::post().to(login))
            .configure(|config| stepwise.configure(config))
    })
    .on_connect(move |connection, _| adapters::http::drop_when_stalled(connection, stalled_after))
    .listen(listener)?
    .shutdown_timeout(2)
    .run())
}

/// The application's home page: who is signed in, or a form to sign in.
async fn home(req: HttpRequest, sessions: web::Data<Sessions>) -> HttpResponse {
    let body = match sessions.user(&req) {
        Some(user) => format!("<p id=\"user\">Signed in as {user}.</p><p><a href=\"{MOUNT}/\">Your tasks</a></p>"),
        None => format!(
            "<form method=\"post\" action=\"/login\"><label>Your name <input id=\"user\" name=\"user\" \
             pattern=\"[a-z]{{1,40}}\" required></label> <button type=\"submit\">Sign in</button></form>\
             <p>Stepwise is at <a href=\"{MOUNT}/\">{MOUNT}/</a>.</p>"
        ),
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!("<!doctype html><title>Host app</title><h1>Host app</h1>{body}"))
}

/// Signs a user in by name (the example trusts whoever types it) and goes to their tasks.
async fn login(form: web::Form<HashMap<String, String>>, sessions: web::Data<Sessions>) -> HttpResponse {
    let user = form.get("user").map(String::as_str).unwrap_or_default();
    if user.is_empty() || user.len() > 40 || !user.bytes().all(|b| b.is_ascii_lowercase()) {
        return HttpResponse::BadRequest().body("a name is 1 to 40 lowercase letters");
    }
    let session = sessions.sign_in(user);
    HttpResponse::SeeOther()
        .insert_header((header::SET_COOKIE, format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax")))
        .insert_header((header::LOCATION, format!("{MOUNT}/")))
        .finish()
}
