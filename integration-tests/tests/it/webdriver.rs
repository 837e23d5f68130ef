//! A real headless Chromium for the web view's tests: Debian's `chromium` and
//! `chromium-driver` (never a downloaded browser), each browser behind a chromedriver of its
//! own on a free port, driven over WebDriver (and Chrome's DevTools commands through it)
//! with the tests' HTTP client. Everything is async on the test's thread, so the server
//! under test keeps serving the page while a test waits on it; every wait polls with a
//! deadline.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::http_client;
use crate::support::PATIENCE;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one WebDriver command may take (a navigation waits for the page to load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a wait asks the page again.
const POLL: Duration = Duration::from_millis(40);

/// Chromium's and chromedriver's paths (`STEPWISE_TEST_CHROMIUM`/`_CHROMEDRIVER` override
/// Debian's); a missing one fails the test, saying how to install it.
fn browser_paths() -> (PathBuf, PathBuf) {
    let chromium = PathBuf::from(std::env::var("STEPWISE_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned()));
    let driver = PathBuf::from(std::env::var("STEPWISE_TEST_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.to_owned()));
    for path in [&chromium, &driver] {
        assert!(
            path.exists(),
            "{} is missing: the web view's tests need a headless Chromium and its WebDriver; install them with \
             `apt-get install -y chromium chromium-driver` (.ci/run does)",
            path.display()
        );
    }
    (chromium, driver)
}

/// A WebDriver error answer (status 0: no answer at all).
#[derive(Debug)]
struct DriverError {
    status: u16,
    value: Value,
}

impl DriverError {
    fn unanswered(message: String) -> DriverError {
        DriverError { status: 0, value: json!({"message": message}) }
    }
}

/// One headless Chromium session, its pages opened on the server at `base`.
pub struct Browser {
    driver: Child,
    address: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
    /// The origin of the server under test, `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Browser {
    /// Starts chromedriver and a session with a fresh profile and a window of `width` ×
    /// `height`, for pages of the server at `server`.
    pub async fn open(server: SocketAddr, width: u32, height: u32) -> Browser {
        let (chromium, chromedriver) = browser_paths();
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut browser = Browser::spawn_driver(&chromedriver, format!("http://{server}"));
            match browser.wait_ready().await {
                Ok(()) => {
                    browser.create_session(&chromium, width, height).await;
                    return browser;
                }
                // Another process took the port first: try another (dropping kills this one).
                Err(error) => last_error = error,
            }
        }
        panic!("chromedriver did not start: {last_error}");
    }

    /// Starts chromedriver on a free port, in a process group of its own that the browsers
    /// it starts join, so that dropping it ends them all.
    fn spawn_driver(chromedriver: &Path, base: String) -> Browser {
        let profile = tempfile::tempdir().expect("a temporary profile directory");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log = profile.path().join("chromedriver.log");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        Browser { driver, address: ([127, 0, 0, 1], port).into(), session: String::new(), profile, base }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(format!("chromedriver exited with {status}"));
            }
            if let Ok(value) = self.request("GET", "/status", None).await {
                if value["ready"] == true {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {PATIENCE:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create_session(&mut self, chromium: &Path, width: u32, height: u32) {
        let user_data = self.profile.path().join("chromium");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--user-data-dir={}", user_data.display()),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = self.request("POST", "/session", Some(&capabilities)).await.unwrap_or_else(|e| {
            panic!("chromedriver could not start {}: {e:?}", chromium.display());
        });
        self.session = created["sessionId"].as_str().expect("a session id").to_owned();
        self.viewport(width, height, false).await;
    }

    /// Sends one WebDriver command; answers its `value`.
    async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, DriverError> {
        let headers = [("Content-Type".to_owned(), "application/json; charset=utf-8".to_owned())];
        let body = body.map(Value::to_string);
        let answer = http_client::send(
            self.address,
            method,
            path,
            &headers,
            body.as_deref().map(str::as_bytes),
            COMMAND_TIMEOUT,
        )
        .await
        .map_err(DriverError::unanswered)?;
        let value: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| DriverError::unanswered(format!("{e}: {}", String::from_utf8_lossy(&answer.body))))?;
        let value = value.get("value").cloned().unwrap_or(value);
        if answer.status == 200 {
            Ok(value)
        } else {
            Err(DriverError { status: answer.status, value })
        }
    }

    /// A command of this session; panics on an error answer.
    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.request(method, &full, Some(&body))
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed ({}): {}", e.status, e.value))
    }

    /// A Chrome DevTools command, through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command("POST", "/goog/cdp/execute", json!({"cmd": cmd, "params": params})).await
    }

    /// The element `css` selects, as WebDriver names it.
    async fn element(&self, css: &str) -> String {
        let found = self.command("POST", "/element", json!({"using": "css selector", "value": css})).await;
        found["element-6066-11e4-a52e-4f735466cecf"].as_str().expect("a WebDriver element reference").to_owned()
    }

    /// Opens `path` on the server.
    pub async fn goto(&self, path: &str) {
        self.command("POST", "/url", json!({"url": format!("{}{path}", self.base)})).await;
    }

    pub async fn refresh(&self) {
        self.command("POST", "/refresh", json!({})).await;
    }

    /// Runs `script` (a function body) in the page; answers what it returns.
    pub async fn js(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", json!({"script": script, "args": []})).await
    }

    /// Clicks the element `css` selects, as a person would (a trusted event).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/click"), json!({})).await;
    }

    /// Presses Enter on the element `css` selects, as a keyboard user would.
    pub async fn press_enter(&self, css: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/value"), json!({"text": "\u{E007}"})).await;
    }

    /// Types `text` into the element `css` selects, in place of what it held.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/clear"), json!({})).await;
        self.command("POST", &format!("/element/{id}/value"), json!({"text": text})).await;
    }

    /// Lets the page show desktop notifications without asking.
    pub async fn grant_notifications(&self) {
        let permission = json!({"descriptor": {"name": "notifications"}, "state": "granted"});
        self.command("POST", "/permissions", permission).await;
    }

    /// Lets [`Browser::deliver_push`] reach service workers: done well before the push,
    /// since a push handed over in the same moment may be dropped.
    pub async fn enable_service_workers(&self) {
        self.cdp("ServiceWorker.enable", json!({})).await;
    }

    /// Hands `data` to the service worker of this origin as a push message, as the browser
    /// does with what its push service delivers, until `shown` (a script answering the
    /// worker's notifications) finds one (handing the same message over again only replaces
    /// it: one notification per task); answers what it shows. A fresh profile numbers its
    /// first service worker registration 0.
    pub async fn deliver_push(&self, data: &str, shown: &str) -> Value {
        let params = json!({"origin": self.base, "registrationId": "0", "data": data});
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.cdp("ServiceWorker.deliverPushMessage", params.clone()).await;
            let attempt = Instant::now() + Duration::from_secs(2);
            while Instant::now() < attempt {
                let notifications = self.js(shown).await;
                if notifications.as_array().is_some_and(|n| !n.is_empty()) {
                    return notifications;
                }
                tokio::time::sleep(POLL).await;
            }
            assert!(Instant::now() < deadline, "the service worker showed no notification within {PATIENCE:?}");
        }
    }

    /// Sets the viewport to `width` × `height` CSS pixels (`mobile` as a phone would).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.cdp("Emulation.setDeviceMetricsOverride", params).await;
    }

    /// Gives every page opened from now on a clock that stands still until the test moves
    /// it with `window.stepwiseTest.advance(ms)`: what the page counts down is then the
    /// test's to decide, not the machine's.
    pub async fn freeze_clock(&self) {
        let source = "(() => { let now = Date.now(); Date.now = () => now; \
                      window.stepwiseTest = { advance: (ms) => { now += ms; } }; })();";
        self.cdp("Page.addScriptToEvaluateOnNewDocument", json!({"source": source})).await;
    }

    /// Asks the page for no motion, as a person who set `prefers-reduced-motion` would
    /// (the setting lasts for the page it is made on).
    pub async fn reduce_motion(&self) {
        let params = json!({"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]});
        self.cdp("Emulation.setEmulatedMedia", params).await;
    }

    /// Saves a PNG of the whole page (beyond the viewport too) as `name` in the screenshot
    /// folder; answers its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await;
        let (size, viewport) = (&metrics["cssContentSize"], &metrics["cssLayoutViewport"]);
        let width = size["width"].as_f64().unwrap_or(0.0).max(viewport["clientWidth"].as_f64().unwrap_or(0.0));
        let height = size["height"].as_f64().unwrap_or(0.0).max(viewport["clientHeight"].as_f64().unwrap_or(0.0));
        let params = json!({"format": "png", "captureBeyondViewport": true,
                            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}});
        let shot = self.cdp("Page.captureScreenshot", params).await;
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD.decode(data).expect("a screenshot in base64");
        let path = screenshot_dir().join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        println!("screenshot: {}", path.display());
        path
    }

    /// The browser console, for failure messages.
    async fn console(&self) -> String {
        let full = format!("/session/{}/se/log", self.session);
        match self.request("POST", &full, Some(&json!({"type": "browser"}))).await {
            Ok(Value::Array(entries)) => {
                entries.iter().map(|e| e["message"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>().join("\n")
            }
            _ => String::new(),
        }
    }

    /// Polls `script` until `wanted` holds for what it returns, and answers that; panics
    /// after PATIENCE with the last answer, the page's text and the console.
    pub async fn wait_on(&self, script: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.js(script).await;
            if wanted(&value) {
                return value;
            }
            if Instant::now() > deadline {
                let text = self.js("return document.body ? document.body.innerText : ''").await;
                panic!(
                    "{what}: not within {PATIENCE:?}.\nlast state: {value:#}\npage text: {}\nconsole: {}",
                    text.as_str().unwrap_or(""),
                    self.console().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ends the session, which closes the browser (dropping it would kill it).
    pub async fn close(mut self) {
        let session = std::mem::take(&mut self.session);
        let ended = self.request("DELETE", &format!("/session/{session}"), None).await;
        ended.unwrap_or_else(|e| panic!("WebDriver could not end the session ({}): {}", e.status, e.value));
    }
}

impl Drop for Browser {
    /// Kills chromedriver and every browser process it started, however the test ended.
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let group = i32::try_from(self.driver.id()).expect("a process id");
        // SAFETY: killpg only sends a signal; the group is chromedriver's own (see spawn_driver).
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

/// Where screenshots go: `screenshots/` in the target directory this test was built in.
fn screenshot_dir() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    let target = test_exe.parent().and_then(Path::parent).and_then(Path::parent).expect("target/<profile>/deps");
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}
