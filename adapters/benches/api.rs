//! The API benchmark: prints figures against the targets of issue 3 and asserts nothing
//! (`cargo bench -p adapters --bench api`).
//!
//! It starts the release `stepwise` binary as its own process (`serve` on 127.0.0.1:0 with a
//! fresh SQLite data directory and a per-token rate so high it never bites, though the
//! limiter still runs), makes tokens with `stepwise token create`, and drives the server from
//! this process over plain TCP to 127.0.0.1 only: a minimal WebSocket client per connection
//! and a minimal HTTP/1.1 keep-alive client for the REST calls. Load generator and server
//! share the machine, as the issue's targets assume.
//!
//! 1. Idle memory: the server's VmRSS before and after `BENCH_CLIENTS` [10000] WebSocket
//!    clients (`/ws/tasks/{id}`, spread over `BENCH_TASKS` [10] tasks of one `external`
//!    step) have each received their snapshot.
//! 2. Fan-out: a driver reports log lines carrying their send time (and now and then a
//!    percent) with `POST /api/tasks/{id}/steps/1/report`. Deliveries/s at full speed (the
//!    driver keeps a few events per task in flight, so it publishes as fast as the clients
//!    receive), server CPU per delivery, then latency from the report's send to each
//!    client's receipt at a paced 100,000 deliveries/s. Times come from one monotonic clock:
//!    driver and clients are both in this process.
//! 3. `GET /api/tasks/{id}/progress` requests/s over `BENCH_HTTP_CONNECTIONS` [64]
//!    keep-alive connections, and the same load on `GET /healthz` (the cheapest handler) in
//!    the same run as the baseline.
//! 4. With `BENCH_CLUSTER_DATABASE_URL` set to a PostgreSQL database the bench may fill: two
//!    servers on it, and the latency of `BENCH_FORWARDED` [2000] reports sent one at a time
//!    to the server that runs their task, against as many sent to the other server, which
//!    carries each to the first (the two alternate, over one keep-alive connection each).
//! 5. Then cross-server live events: `BENCH_CLUSTER_TASKS` [100] tasks on the first server,
//!    a driver per task reporting back to back to it (a log line stamped with its send time,
//!    every 100th report a percent instead), a WebSocket per task on the second server: updates
//!    delivered there per second and their latency from send to receipt. Then the same
//!    drivers paced to `BENCH_CLUSTER_PACED` [5000] reports/s in all: the latency of the path
//!    itself, on a machine that is not saturated.
//! 6. And the database load the two servers add: commits per minute while both are idle,
//!    and again while the tasks of phases 4 and 5 run without reporting.
//!
//! Each measurement lasts `BENCH_SECONDS` [5] after a short warm-up; `BENCH_WINDOW` [16] is
//! how many events per task the full-speed driver keeps ahead of the clients. Other
//! `STEPWISE_*` variables pass through to the server (e.g. `STEPWISE_API__WS_QUEUE_EVENTS=1024`),
//! except its address, data directory, database and rate, which the bench sets. Cargo builds
//! the `stepwise` binary for `cargo bench`; if it is missing, run
//! `cargo build --release -p adapters --bin stepwise`. `BENCH_STEPWISE_BIN=path` measures
//! another build of `stepwise` instead (say, the last release, to compare the two). A line
//! at the end says so when other processes took CPU during a measurement (every figure is
//! lower on a shared machine).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The issue's targets (on the 2-core machine, load generator included).
const TARGET_CLIENTS: usize = 10_000;
const TARGET_DELIVERIES_PER_S: f64 = 500_000.0;
const PACED_DELIVERIES_PER_S: f64 = 100_000.0;
const TARGET_P99: Duration = Duration::from_millis(10);
const TARGET_KIB_PER_CONNECTION: f64 = 8.0;
const TARGET_PROGRESS_PER_S: f64 = 50_000.0;

/// How long the full-speed driver waits for its window before publishing anyway (a client
/// that lagged and got a fresh snapshot never receives the events it missed).
const WINDOW_STALL: Duration = Duration::from_secs(1);
/// WebSocket handshakes in flight at once while connecting, so the accept queue never
/// overflows.
const CONNECTING: usize = 256;
/// Every this-many reports on a task is a percent (one more) instead of a log line.
const PROGRESS_EVERY: u64 = 100;
/// The fixed handshake key and the accept value it must get (RFC 6455's example).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Latency histogram: buckets of 10 µs up to 2 s, then one overflow bucket.
const BUCKET_NS: u64 = 10_000;
const BUCKETS: usize = 200_000;

fn size(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Progress for the person watching, on stderr.
macro_rules! note {
    ($($arg:tt)*) => { eprintln!("[api bench] {}", format!($($arg)*)) };
}

struct Config {
    clients: usize,
    tasks: usize,
    http_connections: usize,
    seconds: Duration,
    /// Events per task published but not yet received by its clients (on average) that the
    /// full-speed driver allows: well under the server's per-client queue (256 by default),
    /// so the figure is what the clients receive, not what the server drops.
    window: u64,
}

impl Config {
    fn from_env() -> Config {
        Config {
            clients: size("BENCH_CLIENTS", 10_000).max(1),
            tasks: size("BENCH_TASKS", 10).max(1),
            http_connections: size("BENCH_HTTP_CONNECTIONS", 64).max(1),
            seconds: Duration::from_secs_f64(size("BENCH_SECONDS", 5).max(1) as f64),
            window: size("BENCH_WINDOW", 16).max(1) as u64,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server process.

/// The `stepwise serve` process; stopped (SIGTERM, then SIGKILL) when dropped, panics included.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    bin: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    _stdout: BufReader<ChildStdout>,
    // Last: removed after the process is gone.
    _data: tempfile::TempDir,
}

impl Server {
    /// Starts `stepwise serve` on a fresh data directory, on its SQLite database unless
    /// `database_url` names another.
    fn start(bin: &Path, database_url: Option<&str>) -> Server {
        let data = tempfile::Builder::new().prefix("stepwise-api-bench-").tempdir().expect("a temporary directory");
        let env: Vec<(String, String)> = [
            ("STEPWISE_DATA_DIR", data.path().display().to_string()),
            ("STEPWISE_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
            ("STEPWISE_SERVER__SHUTDOWN_TIMEOUT_S", "1".to_owned()),
            ("STEPWISE_API__REQUESTS_PER_SECOND", "1000000000".to_owned()),
            ("STEPWISE_API__REQUEST_BURST", "1000000000".to_owned()),
            ("STEPWISE_LOG__LEVEL", std::env::var("STEPWISE_LOG__LEVEL").unwrap_or_else(|_| "warn".to_owned())),
        ]
        .into_iter()
        .chain(database_url.map(|url| ("STEPWISE_DATABASE__URL", url.to_owned())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let log = data.path().join("server.log");
        let mut command = stepwise(bin, &env);
        command
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("the server's log file"));
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let addr = line.trim().strip_prefix("listening on http://").and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start (printed {line:?}); its log:\n{}", tail(&log));
        };
        assert!(addr.ip().is_loopback(), "the server must listen on 127.0.0.1, not {addr}");
        let pid = child.id();
        Server { child, pid, addr, bin: bin.to_owned(), env, log, _stdout: stdout, _data: data }
    }

    /// A fresh token for `user`, made by `stepwise token create` beside the running server.
    fn token(&self, user: &str) -> String {
        let output = stepwise(&self.bin, &self.env)
            .args(["token", "create", "--user", user])
            .stdin(Stdio::null())
            .output()
            .expect("run stepwise token create");
        let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success() && !token.is_empty(),
            "stepwise token create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        token
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[api bench] the server's log ends:\n{}", tail(&self.log));
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `stepwise` command with the bench's settings (and the caller's other `STEPWISE_*`).
fn stepwise(bin: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(bin);
    command.env_remove("STEPWISE_CONFIG").env_remove("STEPWISE_DATABASE__URL");
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The `stepwise` binary to measure: `BENCH_STEPWISE_BIN` when set (an older build, to
/// compare two versions with one harness), else the release one cargo built for this bench,
/// else the one beside it.
fn stepwise_binary() -> PathBuf {
    if let Some(chosen) = std::env::var_os("BENCH_STEPWISE_BIN").map(PathBuf::from) {
        if chosen.is_file() {
            return chosen;
        }
        eprintln!("error: BENCH_STEPWISE_BIN={} is not a file", chosen.display());
        std::process::exit(1)
    }
    let built = PathBuf::from(env!("CARGO_BIN_EXE_stepwise"));
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("stepwise")))
        .unwrap_or_else(|| built.clone());
    [built, beside].into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        eprintln!(
            "error: the release `stepwise` binary is missing; build it first with\n  cargo build --release -p adapters --bin stepwise"
        );
        std::process::exit(1)
    })
}

// ---------------------------------------------------------------------------------------
// /proc readings.

/// Resident memory of a process, KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process (`self` or a pid), clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// Clock ticks per second, from `getconf CLK_TCK`, and where the figure came from; 100
/// (Linux's usual) if that fails.
fn clock_ticks_per_s() -> (f64, &'static str) {
    static TICKS: OnceLock<(f64, &'static str)> = OnceLock::new();
    *TICKS.get_or_init(|| {
        let read = Command::new("getconf").arg("CLK_TCK").output().ok();
        match read.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok()) {
            Some(ticks) if ticks > 0.0 => (ticks, "from getconf CLK_TCK"),
            _ => (100.0, "assumed: getconf CLK_TCK failed"),
        }
    })
}

/// Busy CPU time of the whole machine (user, nice, system, irq, softirq, steal), clock ticks.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum()
}

/// CPU time used so far by the server, this process and the whole machine.
#[derive(Clone, Copy)]
struct CpuSample {
    server: u64,
    bench: u64,
    machine: u64,
    at: Instant,
}

impl CpuSample {
    fn take(server_pid: u32) -> CpuSample {
        CpuSample {
            server: cpu_ticks(&server_pid.to_string()),
            bench: cpu_ticks("self"),
            machine: machine_busy_ticks(),
            at: Instant::now(),
        }
    }

    /// What was used between `self` and `later`, in CPU-seconds.
    fn until(&self, later: &CpuSample) -> CpuUse {
        let ticks = clock_ticks_per_s().0;
        let (server, bench) = (later.server - self.server, later.bench - self.bench);
        let others = (later.machine - self.machine).saturating_sub(server + bench);
        CpuUse {
            server: server as f64 / ticks,
            bench: bench as f64 / ticks,
            others: others as f64 / ticks,
            elapsed: later.at - self.at,
        }
    }
}

/// CPU-seconds used over `elapsed`.
struct CpuUse {
    server: f64,
    bench: f64,
    others: f64,
    elapsed: Duration,
}

impl CpuUse {
    fn percent(&self, cpu_s: f64) -> f64 {
        cpu_s * 100.0 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// "server 160%, bench 39%, other processes 1% of one CPU".
    fn describe(&self) -> String {
        format!(
            "server {:.0}%, bench process {:.0}%, other processes {:.0}% of one CPU",
            self.percent(self.server),
            self.percent(self.bench),
            self.percent(self.others)
        )
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The soft and hard limits on open files of this process.
fn fd_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or("");
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers.first().copied().unwrap_or(1024), numbers.get(1).copied().unwrap_or(1024))
}

/// Makes sure this process (and so the server, which inherits it) may open `needed` files:
/// raises the soft limit to the hard one with `prlimit` (no unsafe code here) if it must.
fn ensure_fd_limit(needed: u64) {
    let (soft, hard) = fd_limits();
    if soft >= needed {
        return;
    }
    if hard >= needed {
        let pid = std::process::id().to_string();
        let _ = Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={hard}:{hard}")]).status();
    }
    let (soft, hard) = fd_limits();
    if soft < needed {
        eprintln!(
            "error: {needed} open files are needed (BENCH_CLIENTS plus connections) but the limit is {soft} (hard {hard}); \
             raise `ulimit -n` or lower BENCH_CLIENTS"
        );
        std::process::exit(1);
    }
    note!("raised the open-file limit to {soft}");
}

// ---------------------------------------------------------------------------------------
// What the clients share.

/// A counter on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Counter(AtomicU64);

struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { buckets: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }

    fn record(&self, ns: u64) {
        let bucket = usize::try_from(ns / BUCKET_NS).unwrap_or(BUCKETS).min(BUCKETS);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The upper edge of the bucket holding quantile `q`; None when empty, the overflow
    /// bucket reads as 2 s.
    fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos((i as u64 + 1) * BUCKET_NS));
            }
        }
        None
    }
}

struct Shared {
    /// The common epoch of send and receipt times.
    start: Instant,
    /// Clients that have their first snapshot.
    ready: AtomicUsize,
    /// Per task: messages its clients received after their first snapshot.
    received: Vec<Counter>,
    /// Snapshots after the first: a client's queue overflowed and it was resynchronised.
    resyncs: AtomicU64,
    /// Latency of `F` (full speed) and `L` (paced) log lines.
    fast: Histogram,
    paced: Histogram,
    failures: AtomicUsize,
    first_failure: Mutex<Option<String>>,
}

impl Shared {
    fn new(tasks: usize) -> Shared {
        Shared {
            start: Instant::now(),
            ready: AtomicUsize::new(0),
            received: (0..tasks).map(|_| Counter::default()).collect(),
            resyncs: AtomicU64::new(0),
            fast: Histogram::new(),
            paced: Histogram::new(),
            failures: AtomicUsize::new(0),
            first_failure: Mutex::new(None),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn received(&self) -> u64 {
        self.received.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }

    fn fail(&self, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(error);
    }

    fn failure(&self) -> Option<String> {
        self.first_failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client.

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    consumed: usize,
}

impl Http {
    async fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http { stream, buf: vec![0; 8192], filled: 0, consumed: 0 })
    }

    /// Sends one request and reads its response: the status and where the body is in `buf`.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Range<usize>)> {
        self.buf.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.consumed = 0;
        self.stream.write_all(request).await?;
        loop {
            if let Some(head) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                let (status, length) = parse_head(&self.buf[..head])?;
                let total = head + 4 + length;
                if self.filled >= total {
                    self.consumed = total;
                    return Ok((status, head + 4..total));
                }
                if self.buf.len() < total {
                    self.buf.resize(total, 0);
                }
            } else if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            self.filled += n;
        }
    }

    /// One request; the status and the body as JSON (Null if it is not JSON).
    async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Value)> {
        let (status, body) = self.exchange(request).await?;
        Ok((status, serde_json::from_slice(&self.buf[body]).unwrap_or(Value::Null)))
    }
}

fn parse_head(head: &[u8]) -> std::io::Result<(u16, usize)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let text = std::str::from_utf8(head).map_err(|_| bad("a response head that is not text"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().map_err(|_| bad("a bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            return Err(bad("a chunked response (this client reads Content-Length only)"));
        }
    }
    Ok((status, length))
}

fn get(host: &str, path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n").into_bytes()
}

fn post(host: &str, path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------
// A minimal WebSocket client: a fixed key, unmasked text frames from the server, masked
// pongs to its pings.

/// The header of the frame at the start of `buf`: (opcode, header length, payload length).
fn frame_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("the server sent a masked frame".to_owned());
    }
    let (header, length) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= 10 => {
            let bytes: [u8; 8] = buf[2..10].try_into().unwrap_or_default();
            (10, usize::try_from(u64::from_be_bytes(bytes)).map_err(|_| "a huge frame".to_owned())?)
        }
        126 | 127 => return Ok(None),
        n => (2, usize::from(n)),
    };
    Ok(Some((buf[0] & 0x0f, header, length)))
}

/// The send time in a log line `…"line":"<prefix><ns>"…`.
fn sent_ns(payload: &[u8]) -> Option<(u8, u64)> {
    const LINE: &[u8] = b"\"line\":\"";
    let at = find(payload, LINE)? + LINE.len();
    let prefix = *payload.get(at)?;
    let digits = &payload[at + 1..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    Some((prefix, std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?))
}

fn handshake(host: &str, path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes()
}

/// One WebSocket client of task `task`: connects, counts and times what it receives until
/// it is aborted. `permit` is held until the first snapshot.
async fn ws_client(
    shared: &Shared,
    addr: SocketAddr,
    task: usize,
    request: &[u8],
    permit: OwnedSemaphorePermit,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.write_all(request).await.map_err(|e| format!("send the handshake: {e}"))?;
    let mut buf = vec![0u8; 2048];
    let mut filled = 0;
    let head = loop {
        if let Some(head) = find(&buf[..filled], b"\r\n\r\n") {
            break head + 4;
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await.map_err(|e| format!("read the handshake: {e}"))?;
        if n == 0 {
            return Err(format!("the server closed the handshake: {}", String::from_utf8_lossy(&buf[..filled])));
        }
        filled += n;
    };
    let response = String::from_utf8_lossy(&buf[..head]).into_owned();
    if !response.starts_with("HTTP/1.1 101") || !response.contains(WS_ACCEPT) {
        return Err(format!("the upgrade was refused: {}", response.lines().next().unwrap_or("")));
    }
    buf.copy_within(head..filled, 0);
    filled -= head;
    let mut permit = Some(permit);
    let mut pongs: Vec<u8> = Vec::new();
    loop {
        let mut at = 0;
        while let Some((opcode, header, length)) = frame_header(&buf[at..filled])? {
            if filled - at < header + length {
                if buf.len() < header + length {
                    buf.resize(header + length, 0);
                }
                break;
            }
            let payload = &buf[at + header..at + header + length];
            match opcode {
                0x1 if permit.is_some() => {
                    if !payload.starts_with(b"{\"type\":\"snapshot\"") {
                        return Err(format!("the first message is no snapshot: {}", String::from_utf8_lossy(payload)));
                    }
                    permit = None;
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                0x1 => {
                    shared.received[task].0.fetch_add(1, Ordering::Relaxed);
                    if payload.starts_with(b"{\"type\":\"log\"") {
                        match sent_ns(payload) {
                            Some((b'F', sent)) => shared.fast.record(shared.now_ns().saturating_sub(sent)),
                            Some((b'L', sent)) => shared.paced.record(shared.now_ns().saturating_sub(sent)),
                            _ => {}
                        }
                    } else if payload.starts_with(b"{\"type\":\"snapshot\"") {
                        shared.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                0x8 => return Err("the server closed the WebSocket".to_owned()),
                0x9 => {
                    // A pong with the ping's payload, masked as client frames must be.
                    let mask = [0x5a, 0x13, 0xc7, 0x2e];
                    pongs.extend_from_slice(&[0x8a, 0x80 | (length as u8 & 0x7f)]);
                    pongs.extend_from_slice(&mask);
                    pongs.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                }
                _ => {}
            }
            at += header + length;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if !pongs.is_empty() {
            stream.write_all(&pongs).await.map_err(|e| format!("send a pong: {e}"))?;
            pongs.clear();
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".to_owned());
        }
        filled += n;
    }
}

/// Waits until `done`, printing progress each second; panics on a client failure or after
/// `timeout`.
async fn wait_until(shared: &Shared, what: &str, timeout: Duration, mut done: impl FnMut() -> Option<String>) {
    let began = Instant::now();
    let mut said = Instant::now();
    loop {
        let status = done();
        let Some(status) = status else { return };
        if let Some(failure) = shared.failure() {
            panic!("{} client(s) failed while {what}; the first: {failure}", shared.failures.load(Ordering::Relaxed));
        }
        assert!(began.elapsed() < timeout, "gave up {what} after {timeout:?}: {status}");
        if said.elapsed() >= Duration::from_secs(1) {
            note!("{what}: {status}");
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The phases.

struct Api {
    addr: SocketAddr,
    host: String,
    token: String,
}

/// Creates `n` tasks of one external step and waits until each step runs.
async fn create_tasks(api: &Api, n: usize) -> Vec<String> {
    let mut http = Http::connect(api.addr).await.expect("connect to the server");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!(r#"{{"title": "Bench task {i}", "steps": [{{"name": "Report", "kind": "external"}}]}}"#);
        let (status, document) =
            http.call(&post(&api.host, "/api/tasks", &api.token, &body)).await.expect("POST /api/tasks");
        assert_eq!(status, 201, "POST /api/tasks answered {status}: {document}");
        ids.push(document["task_id"].as_str().expect("a task_id").to_owned());
    }
    let began = Instant::now();
    for id in &ids {
        loop {
            let request = get(&api.host, &format!("/api/tasks/{id}/progress"), Some(&api.token));
            let (status, document) = http.call(&request).await.expect("GET progress");
            assert_eq!(status, 200, "GET /api/tasks/{id}/progress answered {status}: {document}");
            if document["steps"][0]["status"] == "running" {
                break;
            }
            assert!(began.elapsed() < Duration::from_secs(30), "task {id}'s step never started: {document}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    ids
}

/// What one task's driver did.
#[derive(Default)]
struct Driven {
    published: u64,
    refused: u64,
    forced: u64,
}

/// Reports on one task: a log line `<prefix><send ns>`, or every PROGRESS_EVERY-th a percent
/// one higher (up to 98, so the step never looks done).
struct Driver {
    http: Http,
    host: String,
    token: String,
    path: String,
    percent: u8,
    reports: u64,
}

impl Driver {
    async fn new(api: &Api, task_id: &str, percent: u8) -> Driver {
        Driver {
            http: Http::connect(api.addr).await.expect("connect the driver"),
            host: api.host.clone(),
            token: api.token.clone(),
            path: format!("/api/tasks/{task_id}/steps/1/report"),
            percent,
            reports: 0,
        }
    }

    /// Sends one report; true if the server took it.
    async fn report(&mut self, shared: &Shared, prefix: char) -> bool {
        self.reports += 1;
        let body = if self.reports.is_multiple_of(PROGRESS_EVERY) && self.percent < 98 {
            self.percent += 1;
            format!(r#"{{"progress": {}}}"#, self.percent)
        } else {
            format!(r#"{{"log": "{prefix}{}"}}"#, shared.now_ns())
        };
        let (status, _) = self.http.exchange(&post(&self.host, &self.path, &self.token, &body)).await.expect("report");
        (200..300).contains(&status)
    }
}

/// Publishes as fast as the task's clients receive: at most `window` events ahead of them on
/// average. `F` lines once `measuring` is set.
async fn drive_fast(
    shared: Arc<Shared>,
    mut driver: Driver,
    task: usize,
    subscribers: u64,
    window: u64,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (Driven, Driver) {
    let mut driven = Driven::default();
    let base = shared.received[task].0.load(Ordering::Relaxed);
    let mut blocked_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let delivered = (shared.received[task].0.load(Ordering::Relaxed) - base) / subscribers.max(1);
        if driven.published >= delivered + window {
            let since = *blocked_since.get_or_insert_with(Instant::now);
            if since.elapsed() < WINDOW_STALL {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            driven.forced += 1;
        }
        blocked_since = None;
        let prefix = if measuring.load(Ordering::Relaxed) { 'F' } else { 'W' };
        if driver.report(&shared, prefix).await {
            driven.published += 1;
        } else {
            driven.refused += 1;
        }
    }
    (driven, driver)
}

/// Publishes one report every `interval` from `first` until `until`: `L` lines from
/// `measure_from` on.
async fn drive_paced(
    shared: Arc<Shared>,
    mut driver: Driver,
    interval: Duration,
    first: Instant,
    measure_from: Instant,
    until: Instant,
) -> Driven {
    let mut driven = Driven::default();
    let mut next = first;
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        let prefix = if Instant::now() >= measure_from { 'L' } else { 'W' };
        if driver.report(&shared, prefix).await {
            driven.published += 1;
        } else {
            driven.refused += 1;
        }
        next += interval;
    }
    driven
}

/// What [`http_load`] measured.
struct Load {
    /// 200 answers per second.
    rate: f64,
    /// Other answers, and the first of them.
    other: u64,
    other_status: Option<u16>,
    cpu: CpuUse,
}

/// `connections` keep-alive connections asking `requests` (each its own, in turn) back to
/// back for `seconds` after a warm-up.
async fn http_load(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    connections: usize,
    seconds: Duration,
    server_pid: u32,
) -> Load {
    let ok = Arc::new(Counter::default());
    let other = Arc::new(Counter::default());
    let other_status = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(connections);
    for c in 0..connections {
        let (ok, other, other_status, stop) = (ok.clone(), other.clone(), other_status.clone(), stop.clone());
        let request = requests[c % requests.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await.expect("connect an HTTP load connection");
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = http.exchange(&request).await.expect("an HTTP load request");
                if status == 200 {
                    ok.0.fetch_add(1, Ordering::Relaxed);
                } else {
                    other.0.fetch_add(1, Ordering::Relaxed);
                    other_status.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(status);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok0, cpu0) = (ok.0.load(Ordering::Relaxed), CpuSample::take(server_pid));
    tokio::time::sleep(seconds).await;
    let (ok1, cpu1) = (ok.0.load(Ordering::Relaxed), CpuSample::take(server_pid));
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.expect("an HTTP load connection");
    }
    let cpu = cpu0.until(&cpu1);
    let other_status = *other_status.lock().unwrap_or_else(PoisonError::into_inner);
    Load {
        rate: (ok1 - ok0) as f64 / cpu.elapsed.as_secs_f64(),
        other: other.0.load(Ordering::Relaxed),
        other_status,
        cpu,
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// 1234567.8 → "1,234,568".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "n/a".to_owned(), |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
}

async fn bench(config: &Config, server: &Server) {
    let (ticks_per_s, ticks_origin) = clock_ticks_per_s();
    let pid = server.pid;
    // The most other processes took during a measurement, in CPUs: a shared machine lowers
    // every figure.
    let mut others_max: f64 = 0.0;
    let host = server.addr.to_string();
    note!("server pid {pid} on http://{host} (log: {})", server.log.display());
    let clients_api = Api { addr: server.addr, host: host.clone(), token: server.token("bench") };
    let driver_api = Api { addr: server.addr, host: host.clone(), token: server.token("bench") };
    let task_ids = create_tasks(&driver_api, config.tasks).await;
    note!("{} tasks created; their external steps run", task_ids.len());
    println!(
        "setup: {} WebSocket clients over {} tasks, {} HTTP connections, {} s per measurement; server `stepwise serve` pid {pid} (SQLite, temp dir); this machine has {} CPUs",
        config.clients,
        config.tasks,
        config.http_connections,
        config.seconds.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Phase 1: idle connections.
    let shared = Arc::new(Shared::new(config.tasks));
    let subscribers: Vec<u64> =
        (0..config.tasks).map(|t| ((config.clients + config.tasks - 1 - t) / config.tasks) as u64).collect();
    let requests: Vec<Arc<Vec<u8>>> =
        task_ids.iter().map(|id| Arc::new(handshake(&host, &format!("/ws/tasks/{id}"), &clients_api.token))).collect();
    let rss_before = vm_rss_kib(pid);
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut clients = Vec::with_capacity(config.clients);
    let half = config.clients / 2;
    let mut rss_half = rss_before;
    let began = Instant::now();
    for c in 0..config.clients {
        if c == half && half > 0 {
            wait_until(&shared, "connecting", Duration::from_secs(120), || {
                let ready = shared.ready.load(Ordering::Relaxed);
                (ready < half).then(|| format!("{ready}/{} clients have their snapshot", config.clients))
            })
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            rss_half = vm_rss_kib(pid);
        }
        let permit = Arc::clone(&connecting).acquire_owned().await.expect("the semaphore");
        let (shared, request, addr, task) =
            (Arc::clone(&shared), Arc::clone(&requests[c % config.tasks]), server.addr, c % config.tasks);
        clients.push(tokio::spawn(async move {
            if let Err(error) = ws_client(&shared, addr, task, &request, permit).await {
                shared.fail(error);
            }
        }));
    }
    wait_until(&shared, "connecting", Duration::from_secs(120), || {
        let ready = shared.ready.load(Ordering::Relaxed);
        (ready < config.clients).then(|| format!("{ready}/{} clients have their snapshot", config.clients))
    })
    .await;
    let connected_in = began.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = vm_rss_kib(pid);
    let ready = shared.ready.load(Ordering::Relaxed);
    let average_kib = rss_after.saturating_sub(rss_before) as f64 / ready.max(1) as f64;
    let marginal_kib = rss_after.saturating_sub(rss_half) as f64 / (ready - half).max(1) as f64;
    let worst_kib = average_kib.max(marginal_kib);
    println!(
        "connected clients: {ready} WebSocket clients each with its snapshot, connected in {:.2} s ({}/s) — target {}: {}",
        connected_in.as_secs_f64(),
        thousands(ready as f64 / connected_in.as_secs_f64()),
        thousands(TARGET_CLIENTS as f64),
        verdict(ready >= TARGET_CLIENTS)
    );
    println!(
        "server memory per idle connection: {average_kib:.2} KiB on average (VmRSS {:.1} → {:.1} MiB), {marginal_kib:.2} KiB marginal (second half) — target ≤ {TARGET_KIB_PER_CONNECTION} KiB (the larger of the two): {}",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        verdict(worst_kib <= TARGET_KIB_PER_CONNECTION && ready >= TARGET_CLIENTS)
    );

    // Phase 2a: fan-out at full speed.
    note!("fan-out at full speed: 1 s warm-up, then {} s", config.seconds.as_secs_f64());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::with_capacity(config.tasks);
    for (t, id) in task_ids.iter().enumerate() {
        let driver = Driver::new(&driver_api, id, 0).await;
        let (shared, measuring, stop) = (Arc::clone(&shared), Arc::clone(&measuring), Arc::clone(&stop));
        drivers.push(tokio::spawn(drive_fast(shared, driver, t, subscribers[t], config.window, measuring, stop)));
    }
    let received_start = shared.received();
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let (r0, cpu0) = (shared.received(), CpuSample::take(pid));
    let mut said = Instant::now();
    while cpu0.at.elapsed() < config.seconds {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if said.elapsed() >= Duration::from_secs(1) {
            let rate = (shared.received() - r0) as f64 / cpu0.at.elapsed().as_secs_f64();
            note!("full speed: {} deliveries/s so far", thousands(rate));
            said = Instant::now();
        }
    }
    let (r1, cpu) = (shared.received(), cpu0.until(&CpuSample::take(pid)));
    others_max = others_max.max(cpu.others / cpu.elapsed.as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    let mut fast = Driven::default();
    let mut percents = Vec::with_capacity(config.tasks);
    let mut expected = 0;
    for (t, handle) in drivers.into_iter().enumerate() {
        let (driven, driver) = handle.await.expect("a full-speed driver");
        expected += driven.published * subscribers[t];
        fast.published += driven.published;
        fast.refused += driven.refused;
        fast.forced += driven.forced;
        percents.push(driver.percent);
    }
    // Let the queues drain so the paced phase starts empty.
    let drained = Instant::now();
    while shared.received() - received_start < expected && drained.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deliveries = (r1 - r0) as f64;
    let rate = deliveries / cpu.elapsed.as_secs_f64();
    println!(
        "deliveries/s at full speed: {} ({} messages received by {} clients in {:.2} s; the driver keeps ≤ {} events per task ahead of its clients) — target ≥ {}: {}",
        thousands(rate),
        thousands(deliveries),
        ready,
        cpu.elapsed.as_secs_f64(),
        config.window,
        thousands(TARGET_DELIVERIES_PER_S),
        verdict(rate >= TARGET_DELIVERIES_PER_S && ready >= TARGET_CLIENTS)
    );
    println!(
        "server CPU per delivery: {:.2} µs at full speed ({}; /proc/PID/stat utime+stime at {ticks_per_s} ticks/s, {ticks_origin})",
        cpu.server * 1e6 / deliveries.max(1.0),
        cpu.describe()
    );
    println!(
        "  full speed detail: {} reports published ({} refused, {} sent past a stalled window), {} snapshots resent to lagging clients, latency p50 {} p99 {} (saturated, for reference)",
        thousands(fast.published as f64),
        fast.refused,
        fast.forced,
        shared.resyncs.load(Ordering::Relaxed),
        ms(shared.fast.quantile(0.5)),
        ms(shared.fast.quantile(0.99))
    );

    // Phase 2b: paced.
    let warmup = Duration::from_millis(500);
    note!(
        "fan-out paced at {} deliveries/s: 0.5 s warm-up, then {} s",
        thousands(PACED_DELIVERIES_PER_S),
        config.seconds.as_secs_f64()
    );
    let resyncs_before = shared.resyncs.load(Ordering::Relaxed);
    let began = Instant::now() + Duration::from_millis(50);
    let (measure_from, until) = (began + warmup, began + warmup + config.seconds);
    let mut drivers = Vec::with_capacity(config.tasks);
    for (t, id) in task_ids.iter().enumerate() {
        if subscribers[t] == 0 {
            continue;
        }
        // Each task's events reach its subscribers; together they make the paced rate.
        let per_s = PACED_DELIVERIES_PER_S / (config.tasks as f64 * subscribers[t] as f64);
        let interval = Duration::from_secs_f64(1.0 / per_s);
        let first = began + interval.mul_f64(t as f64 / config.tasks as f64);
        let driver = Driver::new(&driver_api, id, percents[t]).await;
        drivers.push(tokio::spawn(drive_paced(Arc::clone(&shared), driver, interval, first, measure_from, until)));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let (p0, cpu0) = (shared.received(), CpuSample::take(pid));
    while Instant::now() + Duration::from_secs(1) < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        note!(
            "paced: {} deliveries/s so far, p50 {} p99 {}",
            thousands((shared.received() - p0) as f64 / cpu0.at.elapsed().as_secs_f64()),
            ms(shared.paced.quantile(0.5)),
            ms(shared.paced.quantile(0.99))
        );
    }
    tokio::time::sleep_until(until.into()).await;
    let (p1, paced_cpu) = (shared.received(), cpu0.until(&CpuSample::take(pid)));
    others_max = others_max.max(paced_cpu.others / paced_cpu.elapsed.as_secs_f64());
    let mut paced = Driven::default();
    for handle in drivers {
        let driven = handle.await.expect("a paced driver");
        paced.published += driven.published;
        paced.refused += driven.refused;
    }
    // The last lines' receipts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paced_rate = (p1 - p0) as f64 / paced_cpu.elapsed.as_secs_f64();
    let (p50, p99) = (shared.paced.quantile(0.5), shared.paced.quantile(0.99));
    let rate_reached = paced_rate >= PACED_DELIVERIES_PER_S * 0.95;
    println!(
        "latency report sent → client received at {} deliveries/s (paced; reached {}/s): p50 {}, p90 {}, p99 {}, max ≤ {} over {} log lines — target p99 ≤ {} ms: {}{}",
        thousands(PACED_DELIVERIES_PER_S),
        thousands(paced_rate),
        ms(p50),
        ms(shared.paced.quantile(0.9)),
        ms(p99),
        ms(shared.paced.quantile(1.0)),
        thousands(shared.paced.count() as f64),
        TARGET_P99.as_millis(),
        verdict(p99.is_some_and(|p| p <= TARGET_P99) && rate_reached && ready >= TARGET_CLIENTS),
        if rate_reached { "" } else { " (the paced rate was not reached)" }
    );
    let resyncs = shared.resyncs.load(Ordering::Relaxed) - resyncs_before;
    println!(
        "  paced detail: {} reports published ({} refused), {resyncs} snapshots resent to lagging clients, {:.2} µs server CPU per delivery; {}",
        thousands(paced.published as f64),
        paced.refused,
        paced_cpu.server * 1e6 / (p1 - p0).max(1) as f64,
        paced_cpu.describe()
    );
    let failures = shared.failures.load(Ordering::Relaxed);
    if failures > 0 {
        println!(
            "  {failures} WebSocket client(s) failed during the fan-out; the first: {}",
            shared.failure().unwrap_or_default()
        );
    }

    // Phase 3: GET /progress against GET /healthz.
    note!("closing the WebSocket clients");
    for client in &clients {
        client.abort();
    }
    for client in clients {
        let _ = client.await;
    }
    let closing = Instant::now();
    while open_fds(pid) > 200 && closing.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    note!(
        "GET /healthz then GET /progress with {} connections, {} s each",
        config.http_connections,
        config.seconds.as_secs_f64()
    );
    let health = vec![get(&host, "/healthz", None)];
    let health = http_load(server.addr, health, config.http_connections, config.seconds, pid).await;
    let progress: Vec<Vec<u8>> =
        task_ids.iter().map(|id| get(&host, &format!("/api/tasks/{id}/progress"), Some(&driver_api.token))).collect();
    let progress = http_load(server.addr, progress, config.http_connections, config.seconds, pid).await;
    let per_request_us = |load: &Load| load.cpu.server * 1e6 / (load.rate * load.cpu.elapsed.as_secs_f64()).max(1.0);
    let not_ok = |load: &Load| {
        load.other_status.map_or(String::new(), |s| format!("; {} answers were not 200 (e.g. {s})", load.other))
    };
    println!(
        "GET /healthz requests/s (the baseline: the cheapest handler, same connections): {} ({:.1} µs server CPU each; {}){}",
        thousands(health.rate),
        per_request_us(&health),
        health.cpu.describe(),
        not_ok(&health)
    );
    println!(
        "GET /api/tasks/{{id}}/progress requests/s: {} over {} keep-alive connections ({:.0}% of /healthz; {:.1} µs server CPU each; {}) — target ≥ {}: {}{}",
        thousands(progress.rate),
        config.http_connections,
        progress.rate * 100.0 / health.rate.max(1.0),
        per_request_us(&progress),
        progress.cpu.describe(),
        thousands(TARGET_PROGRESS_PER_S),
        verdict(progress.rate >= TARGET_PROGRESS_PER_S && progress.other == 0),
        not_ok(&progress)
    );
    for load in [&health, &progress] {
        others_max = others_max.max(load.cpu.others / load.cpu.elapsed.as_secs_f64());
    }
    let logged = std::fs::read_to_string(&server.log).unwrap_or_default();
    if let Some(last) = logged.lines().last() {
        println!("the server logged {} line(s) at warn or above; the last: {last}", logged.lines().count());
    }
    if others_max > 0.1 {
        println!(
            "caution: other processes (or kernel threads) used up to {:.0}% of one CPU during a measurement; the figures above are lower than this machine gives when otherwise idle",
            others_max * 100.0
        );
    }
}

/// Phases 4 to 6, on two servers sharing the PostgreSQL database at `url`.
async fn cluster(bin: &Path, url: &str, config: &Config) {
    note!("cluster: two servers on {}", db::redact(url));
    let (holder, other) = (Server::start(bin, Some(url)), Server::start(bin, Some(url)));
    let idle = commits_per_minute(url, config.seconds).await;
    println!(
        "database load of two idle servers: {idle:.0} commits/min ({:.2} per server per second)",
        idle / 60.0 / 2.0
    );
    let api = Api { addr: holder.addr, host: holder.addr.to_string(), token: holder.token("bench") };
    forwarding(&holder, &other, &api, size("BENCH_FORWARDED", 2_000).max(10)).await;
    let tasks = size("BENCH_CLUSTER_TASKS", 100).max(1);
    cross_server_events(&holder, &other, &api, tasks, config.seconds).await;
    let busy = commits_per_minute(url, config.seconds).await;
    println!(
        "database load with {} silent running tasks on the two servers: {busy:.0} commits/min ({:.2} per task per minute above idle)",
        tasks + 1,
        (busy - idle).max(0.0) / (tasks + 1) as f64
    );
}

/// The database's committed transactions per minute over `window` (every client's, this
/// bench's few `psql` reads included).
async fn commits_per_minute(url: &str, window: Duration) -> f64 {
    let commits = || {
        let output = Command::new("psql")
            .args([url, "-qtAc", "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"])
            .output()
            .expect("run psql (PostgreSQL's client)");
        String::from_utf8_lossy(&output.stdout).trim().parse::<f64>().unwrap_or(0.0)
    };
    // Backends report their counts to the statistics at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = commits();
    tokio::time::sleep(window).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (commits() - before) / (window.as_secs_f64() + 1.5) * 60.0
}

/// Phase 5: live events of tasks one server runs, delivered to WebSockets on the other.
/// Each of `tasks` tasks has one driver reporting back to back to the server running it,
/// each report a log line carrying its send time (every 100th a higher percent instead); one
/// client per task follows it on the other server, which hears of them through the
/// doorbell and reads them from the database.
async fn cross_server_events(holder: &Server, other: &Server, api: &Api, tasks: usize, seconds: Duration) {
    let ids = create_tasks(api, tasks).await;
    let shared = Arc::new(Shared::new(tasks));
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut clients = Vec::with_capacity(tasks);
    for (task, id) in ids.iter().enumerate() {
        let request = handshake(&other.addr.to_string(), &format!("/ws/tasks/{id}"), &api.token);
        let permit = Arc::clone(&connecting).acquire_owned().await.expect("the semaphore");
        let (shared, addr) = (Arc::clone(&shared), other.addr);
        clients.push(tokio::spawn(async move {
            if let Err(error) = ws_client(&shared, addr, task, &request, permit).await {
                shared.fail(error);
            }
        }));
    }
    wait_until(&shared, "connecting on the other server", Duration::from_secs(60), || {
        let ready = shared.ready.load(Ordering::Relaxed);
        (ready < tasks).then(|| format!("{ready}/{tasks} clients have their snapshot"))
    })
    .await;
    let (measuring, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let mut drivers = Vec::with_capacity(tasks);
    for id in &ids {
        let driver = Driver::new(api, id, 0).await;
        let (shared, measuring, stop) = (Arc::clone(&shared), Arc::clone(&measuring), Arc::clone(&stop));
        drivers.push(tokio::spawn(async move {
            let mut driver = driver;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let prefix = if measuring.load(Ordering::Relaxed) { 'F' } else { 'W' };
                if driver.report(&shared, prefix).await && prefix == 'F' {
                    sent += 1;
                }
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received_before: u64 = shared.received.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
    let (cpu_before, other_cpu_before) = (cpu_ticks(&holder.pid.to_string()), cpu_ticks(&other.pid.to_string()));
    measuring.store(true, Ordering::Relaxed);
    let began = Instant::now();
    tokio::time::sleep(seconds).await;
    measuring.store(false, Ordering::Relaxed);
    let measured = began.elapsed();
    let (cpu_after, other_cpu_after) = (cpu_ticks(&holder.pid.to_string()), cpu_ticks(&other.pid.to_string()));
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for driver in drivers {
        sent += driver.await.expect("a driver");
    }
    // The last lines of the window arrive a flush and a ring later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received_after: u64 = shared.received.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
    let lines = shared.fast.count();
    let secs = measured.as_secs_f64();
    let paced_rate = size("BENCH_CLUSTER_PACED", 5_000).max(1);
    let interval = Duration::from_secs_f64(tasks as f64 / paced_rate as f64);
    let first = Instant::now() + Duration::from_millis(100);
    let (measure_from, until) = (first + Duration::from_secs(1), first + Duration::from_secs(1) + seconds);
    let mut paced = Vec::with_capacity(tasks);
    for (task, id) in ids.iter().enumerate() {
        let driver = Driver::new(api, id, 0).await;
        // Spread over the interval, so the reports do not come in bursts.
        let offset = interval.mul_f64(task as f64 / tasks as f64);
        paced.push(tokio::spawn(drive_paced(
            Arc::clone(&shared),
            driver,
            interval,
            first + offset,
            measure_from,
            until,
        )));
    }
    let mut paced_sent = 0;
    for driver in paced {
        paced_sent += driver.await.expect("a paced driver").published;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for client in clients {
        client.abort();
    }
    let (ticks_per_s, _) = clock_ticks_per_s();
    let p99 = shared.fast.quantile(0.99);
    println!(
        "cross-server live events ({tasks} tasks run by one server, a WebSocket per task on the other): {} reports/s sent, {} updates/s delivered on the other server ({} of {} stamped lines; {} messages/s of every kind, progress and eta included), latency p50 {} p99 {} max {} — target ≥ 20,000 updates/s with p99 ≤ 100 ms: {}; CPU: holder {:.2} s, other {:.2} s",
        thousands(sent as f64 / secs),
        thousands(lines as f64 / secs),
        lines,
        sent,
        thousands((received_after - received_before) as f64 / secs),
        ms(shared.fast.quantile(0.5)),
        ms(p99),
        ms(shared.fast.quantile(1.0)),
        verdict(lines as f64 / secs >= 20_000.0 && p99.is_some_and(|p| p <= Duration::from_millis(100))),
        (cpu_after - cpu_before) as f64 / ticks_per_s,
        (other_cpu_after - other_cpu_before) as f64 / ticks_per_s,
    );
    println!(
        "cross-server live events paced at {paced_rate} reports/s in all ({} sent): latency p50 {} p99 {} max {} over {} stamped lines",
        paced_sent,
        ms(shared.paced.quantile(0.5)),
        ms(shared.paced.quantile(0.99)),
        ms(shared.paced.quantile(1.0)),
        shared.paced.count(),
    );
}

/// Phase 4: a report sent to the server running its task, against one carried there by
/// another server.
async fn forwarding(holder: &Server, other: &Server, api: &Api, requests: usize) {
    let id = create_tasks(api, 1).await.remove(0);
    let path = format!("/api/tasks/{id}/steps/1/report");
    let mut direct = Http::connect(holder.addr).await.expect("connect to the holder");
    let mut carried = Http::connect(other.addr).await.expect("connect to the other server");
    let report = |host: &str| post(host, &path, &api.token, r#"{"log": "bench"}"#);
    let (to_holder_request, through_other_request) =
        (report(&holder.addr.to_string()), report(&other.addr.to_string()));
    let (mut to_holder, mut through_other) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for round in 0..requests + requests / 10 {
        let a = timed_report(&mut direct, &to_holder_request).await;
        let b = timed_report(&mut carried, &through_other_request).await;
        // The first tenth warms connections and caches up.
        if round >= requests / 10 {
            to_holder.push(a);
            through_other.push(b);
        }
    }
    let at = |times: &mut Vec<Duration>, q: f64| {
        times.sort();
        times[((times.len() - 1) as f64 * q).round() as usize]
    };
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let (direct_p50, direct_p99) = (at(&mut to_holder, 0.5), at(&mut to_holder, 0.99));
    let (carried_p50, carried_p99) = (at(&mut through_other, 0.5), at(&mut through_other, 0.99));
    let added_p99 = carried_p99.saturating_sub(direct_p99);
    println!(
        "report sent to the task's server: p50 {}, p99 {}; sent to another server, which carries it there: p50 {}, p99 {} ({requests} each) — added p50 {}, p99 {}, target p99 ≤ 5 ms added: {}",
        ms(direct_p50),
        ms(direct_p99),
        ms(carried_p50),
        ms(carried_p99),
        ms(carried_p50.saturating_sub(direct_p50)),
        ms(added_p99),
        verdict(added_p99 <= Duration::from_millis(5)),
    );
}

async fn timed_report(http: &mut Http, request: &[u8]) -> Duration {
    let began = Instant::now();
    let (status, _) = http.exchange(request).await.expect("POST report");
    assert_eq!(status, 200, "a report answered {status}");
    began.elapsed()
}

fn main() {
    let config = Config::from_env();
    ensure_fd_limit((config.clients + config.http_connections + config.tasks + 256) as u64);
    let bin = stepwise_binary();
    note!("starting {} serve", bin.display());
    let server = Server::start(&bin, None);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(bench(&config, &server));
    match std::env::var("BENCH_CLUSTER_DATABASE_URL") {
        Ok(url) => runtime.block_on(cluster(&bin, &url, &config)),
        Err(_) => println!(
            "cluster (forwarded requests, cross-server events, database load): not measured (set BENCH_CLUSTER_DATABASE_URL to a PostgreSQL database)"
        ),
    }
    // Aborted clients and load connections are gone with the runtime; then the server stops.
    drop(runtime);
    note!("stopping the server");
    drop(server);
}
