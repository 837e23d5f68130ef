//! The email channel through the real server and a small SMTP server of the test's own on
//! 127.0.0.1: the mail's headers, parts, text and link; mail only for long tasks by
//! default, judged after a restart by the estimate kept at start; preferences switching it
//! per event; a dead SMTP server that delays no other
//! channel; transient (4xx) replies retried and permanent (5xx) ones not; the delivery log;
//! STARTTLS and implicit TLS to a server whose certificate a test CA in
//! `notifications.email.ca_file` signed, and nothing sent in the clear when TLS is required
//! but not offered or not trusted, while a handshake the network cuts short is retried.
//!
//! "Long" is judged by the task's estimate at start. On a fresh database the estimator has
//! no history and assumes its cold-start pace of about a minute a step, so a one-step task
//! is estimated far below the default 600 s and a twenty-step one far above it; tasks are
//! started before any completes, because a completion teaches the estimator that these
//! steps take milliseconds. Tests that are not about length switch the rule off in the
//! user's preferences (`email_long_tasks_only: false`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{EmailSettings, NotificationSettings};
use mail_parser::{MessageParser, MimeHeaders};
use openssl::ssl::SslAcceptor;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::notify::{local, Receiver, Server};
use crate::on_both_backends;
use crate::support::*;

/// How the SMTP server answers the end of a message's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// `250`: taken.
    Accept,
    /// `451`: try again later.
    Transient,
    /// `554`: never.
    Permanent,
}

/// A message as the SMTP server received it.
struct Received {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    reply: Reply,
    /// Whether the session was encrypted when the message came.
    tls: bool,
}

/// How the SMTP server offers TLS.
enum Offer {
    /// Not at all: no `STARTTLS` in its `EHLO` reply.
    Plain,
    /// `STARTTLS` after `EHLO`.
    StartTls(Arc<SslAcceptor>),
    /// TLS from the first byte, as on port 465.
    Implicit(Arc<SslAcceptor>),
    /// `STARTTLS` offered, agreed to, and the connection closed before the handshake: a
    /// network failure, not a refusal.
    HangUpAtStartTls,
}

/// An SMTP server on 127.0.0.1 speaking just enough of RFC 5321 for lettre: answers the
/// data of each message with the next scripted reply (then `250`), and hands over every
/// message it was sent, refused ones included, so a test can count attempts.
struct SmtpServer {
    url: String,
    received: mpsc::UnboundedReceiver<Received>,
}

impl SmtpServer {
    fn start(script: Vec<Reply>) -> SmtpServer {
        SmtpServer::offering(Offer::Plain, script)
    }

    /// A server that offers TLS as `offer` says; its URL is `smtps://` for implicit TLS and
    /// plain `smtp://` otherwise (the test adds the `tls` it wants).
    fn offering(offer: Offer, script: Vec<Reply>) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if matches!(offer, Offer::Implicit(_)) { "smtps" } else { "smtp" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let (sender, received) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                if !session(stream, &offer, &mut script, &sender) {
                    return;
                }
            }
        });
        SmtpServer { url, received }
    }

    /// A server that takes connections and never says a word; returns its URL.
    fn silent() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            // Holds what it takes until the test process ends; a few connections at most.
            for stream in listener.incoming().take(8) {
                held.extend(stream.ok());
            }
        });
        url
    }

    /// The next message sent.
    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv()).await.expect("a mail within PATIENCE").expect("a mail")
    }

    /// Whether a message came that was not yet taken.
    fn has_more(&mut self) -> bool {
        self.received.try_recv().is_ok()
    }
}

/// The byte stream a session runs on: TCP, then perhaps TLS over it.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

type Session = BufReader<Box<dyn Stream>>;

fn say(session: &mut Session, text: &str) -> bool {
    session.get_mut().write_all(text.as_bytes()).is_ok()
}

/// One SMTP session; false once the test is gone.
fn session(
    stream: TcpStream,
    offer: &Offer,
    script: &mut impl Iterator<Item = Reply>,
    sender: &mpsc::UnboundedSender<Received>,
) -> bool {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (mut session, mut tls): (Session, bool) = match offer {
        Offer::Implicit(acceptor) => match acceptor.accept(stream) {
            Ok(tls) => (BufReader::new(Box::new(tls)), true),
            // The client did not trust the certificate: a session that never began.
            Err(_) => return true,
        },
        _ => (BufReader::new(Box::new(stream)), false),
    };
    if !say(&mut session, "220 127.0.0.1 ESMTP test\r\n") {
        return true;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    loop {
        let mut line = String::new();
        if session.read_line(&mut line).unwrap_or(0) == 0 {
            return true;
        }
        let command = line.trim_end().to_owned();
        let verb = command.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        let starttls = !tls && matches!(offer, Offer::StartTls(_) | Offer::HangUpAtStartTls);
        let answer = match verb.as_str() {
            "EHLO" if starttls => "250-127.0.0.1\r\n250-STARTTLS\r\n250 8BITMIME\r\n".to_owned(),
            "EHLO" => "250-127.0.0.1\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".to_owned(),
            "STARTTLS" if starttls => {
                if !say(&mut session, "220 2.0.0 ready to start TLS\r\n") {
                    return true;
                }
                let Offer::StartTls(acceptor) = offer else { return true };
                match acceptor.accept(session.into_inner()) {
                    Ok(encrypted) => session = BufReader::new(Box::new(encrypted)),
                    Err(_) => return true,
                }
                // RFC 3207: the client starts over with EHLO; nothing said before counts.
                (tls, from, to) = (true, String::new(), Vec::new());
                continue;
            }
            "HELO" | "NOOP" => "250 OK\r\n".to_owned(),
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                "250 OK\r\n".to_owned()
            }
            "MAIL" => {
                from = angle(&command);
                "250 OK\r\n".to_owned()
            }
            "RCPT" => {
                to.push(angle(&command));
                "250 OK\r\n".to_owned()
            }
            "DATA" => {
                if !say(&mut session, "354 go ahead\r\n") {
                    return true;
                }
                let mut data = Vec::new();
                loop {
                    let mut line = String::new();
                    if session.read_line(&mut line).unwrap_or(0) == 0 {
                        return true;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    // Dot-stuffing: a line that starts with a dot was sent with two.
                    data.extend_from_slice(line.strip_prefix('.').unwrap_or(&line).as_bytes());
                }
                let reply = script.next().unwrap_or(Reply::Accept);
                let message = Received { from: from.clone(), to: to.clone(), data, reply, tls };
                if sender.send(message).is_err() {
                    return false;
                }
                match reply {
                    Reply::Accept => "250 2.0.0 queued\r\n".to_owned(),
                    Reply::Transient => "451 4.3.0 try again later\r\n".to_owned(),
                    Reply::Permanent => "554 5.7.1 rejected\r\n".to_owned(),
                }
            }
            "QUIT" => {
                say(&mut session, "221 bye\r\n");
                return true;
            }
            _ => "502 not implemented\r\n".to_owned(),
        };
        if !say(&mut session, &answer) {
            return true;
        }
    }
}

/// The address in `MAIL FROM:<a@b> ...` or `RCPT TO:<a@b>`.
fn angle(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..].find('>').map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}

/// A private CA of the test's own, in a PEM file for `notifications.email.ca_file`, and a
/// TLS acceptor with a certificate it signed for 127.0.0.1 and localhost.
struct TestCa {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    acceptor: Arc<SslAcceptor>,
}

impl TestCa {
    fn new() -> TestCa {
        use openssl::asn1::Asn1Time;
        use openssl::bn::{BigNum, MsbOption};
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::{PKey, Private};
        use openssl::ssl::SslMethod;
        use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
        use openssl::x509::{X509NameBuilder, X509};

        let key = || -> PKey<Private> {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        };
        // A certificate for `subject`'s key, signed by `issuer` (itself when `None`).
        let certificate = |subject: &str, subject_key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>| {
            let mut name = X509NameBuilder::new().unwrap();
            name.append_entry_by_text("CN", subject).unwrap();
            let name = name.build();
            let mut serial = BigNum::new().unwrap();
            serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
            let mut builder = X509::builder().unwrap();
            builder.set_version(2).unwrap();
            builder.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
            builder.set_subject_name(&name).unwrap();
            builder.set_issuer_name(issuer.map_or(&*name, |(ca, _)| ca.subject_name())).unwrap();
            builder.set_pubkey(subject_key).unwrap();
            builder.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
            builder.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
            if issuer.is_none() {
                builder.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
                builder.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap()).unwrap();
            } else {
                let names = SubjectAlternativeName::new()
                    .ip("127.0.0.1")
                    .dns("localhost")
                    .build(&builder.x509v3_context(issuer.map(|(ca, _)| &**ca), None))
                    .unwrap();
                builder.append_extension(names).unwrap();
            }
            builder.sign(issuer.map_or(subject_key, |(_, ca_key)| ca_key), MessageDigest::sha256()).unwrap();
            builder.build()
        };
        let ca_key = key();
        let ca = certificate("Stepwise test CA", &ca_key, None);
        let server_key = key();
        let server = certificate("127.0.0.1", &server_key, Some((&ca, &ca_key)));

        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor.set_private_key(&server_key).unwrap();
        acceptor.set_certificate(&server).unwrap();
        acceptor.check_private_key().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.to_pem().unwrap()).unwrap();
        TestCa { _dir: dir, ca_file, acceptor: Arc::new(acceptor.build()) }
    }
}

/// A parsed mail: subject, sender, recipient and both parts.
struct Mail {
    subject: String,
    from: String,
    to: String,
    content_type: String,
    text: String,
    html: String,
}

fn parse(data: &[u8]) -> Mail {
    let message = MessageParser::default().parse(data).expect("a mail that parses");
    let first = |address: Option<&mail_parser::Address>| {
        address.and_then(|a| a.first()).and_then(|a| a.address()).unwrap_or_default().to_owned()
    };
    let content_type = message.content_type().map(|t| format!("{}/{}", t.ctype(), t.subtype().unwrap_or_default()));
    Mail {
        subject: message.subject().unwrap_or_default().to_owned(),
        from: first(message.from()),
        to: first(message.to()),
        content_type: content_type.unwrap_or_default(),
        text: message.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        html: message.body_html(0).map(|t| t.into_owned()).unwrap_or_default(),
    }
}

/// Notification settings with email through `smtp_url` (and the default long-task threshold).
fn with_email(smtp_url: &str) -> NotificationSettings {
    let email = EmailSettings { smtp_url: Some(smtp_url.to_owned()), ..EmailSettings::default() };
    NotificationSettings { email, ..local() }
}

/// [`with_email`] trusting `ca` besides the system's roots.
fn trusting(ca: &TestCa, smtp_url: &str) -> NotificationSettings {
    let settings = with_email(smtp_url);
    let email = EmailSettings { ca_file: Some(ca.ca_file.clone()), ..settings.email };
    NotificationSettings { email, ..settings }
}

/// Sets the caller's preferences; returns what was stored.
async fn set_preferences(server: &Server, token: &str, preferences: Value) -> Value {
    let (status, body) = server.call("PUT", "/api/notifications/preferences", token, Some(preferences)).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The caller's email log entries, oldest first, once there are `n`.
async fn email_log(server: &Server, token: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log: Vec<Value> = server.log(token).await.into_iter().filter(|e| e["channel"] == "email").collect();
        if log.len() >= n {
            return log;
        }
        assert!(Instant::now() < deadline, "the log has {} of {n} email entries: {log:#?}", log.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The task's ETA in seconds, as its progress page shows it.
async fn eta_of(server: &Server, token: &str, task: &str) -> u64 {
    let (status, progress) = server.call("GET", &format!("/api/tasks/{task}/progress"), token, None).await;
    assert_eq!(status, 200, "{progress}");
    progress["eta_seconds"].as_u64().unwrap_or_else(|| panic!("no ETA: {progress}"))
}

/// Names for a task of `n` steps.
fn steps(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("Part {i}")).collect()
}

async fn task_of(server: &Server, token: &str, title: &str, n: usize) -> String {
    let names = steps(n);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    server.task(token, title, &names).await
}

on_both_backends! {
    async fn a_mail_has_the_message_the_progress_and_a_link_in_both_parts(backend: Backend) {
        let db = TestDb::new(backend);
        let mut smtp = SmtpServer::start(Vec::new());
        let settings = NotificationSettings {
            public_url: Some("https://tasks.example.com/stepwise/".to_owned()),
            email: EmailSettings { from: "Stepwise <robot@example.com>".to_owned(), ..with_email(&smtp.url).email },
            ..local()
        };
        let server = Server::start(&db, settings).await;
        let ada = server.token("ada").await;
        set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false})).await;
        let steps = json!([
            {"name": "Build <fast> & \"clean\"", "kind": "external"},
            {"name": "Deploy", "kind": "external", "requires_approval": true},
        ]);
        let (status, body) = server.call("POST", "/api/tasks", &ada, Some(json!({"title": "CRM", "steps": steps}))).await;
        assert_eq!(status, 201, "{body}");
        let task = body["task_id"].as_str().unwrap().to_owned();
        server.report(&ada, &task, 1, "completed").await;

        // The defaults mail approvals: the first mail is step 2's.
        let received = smtp.next().await;
        assert_eq!((received.from.as_str(), received.to.as_slice()), ("robot@example.com", &["ada@example.com".to_owned()][..]));
        let mail = parse(&received.data);
        assert_eq!(mail.subject, "⚠️ Approval required for Step 2");
        assert_eq!((mail.from.as_str(), mail.to.as_str()), ("robot@example.com", "ada@example.com"));
        assert_eq!(mail.content_type, "multipart/alternative");
        let link = format!("https://tasks.example.com/stepwise/tasks/{task}");
        let expected_text = format!(
            "⚠️ Approval required for Step 2\n\nCRM: 50%, approval\nStep 2 of 2: Deploy\n\n\
             1. Build <fast> & \"clean\": completed\n2. Deploy: approval\n\nProgress: {link}\n"
        );
        assert_eq!(mail.text.replace("\r\n", "\n"), expected_text);
        assert!(mail.html.contains("<strong>⚠️ Approval required for Step 2</strong>"), "{}", mail.html);
        assert!(mail.html.contains("<li>Build &lt;fast&gt; &amp; &quot;clean&quot;: completed</li>"), "{}", mail.html);
        assert!(mail.html.contains(&format!("<a href=\"{link}\">")), "{}", mail.html);
        assert!(!mail.html.contains("<fast>"), "the step's name is escaped: {}", mail.html);

        let (status, _) = server.call("POST", &format!("/api/tasks/{task}/approve"), &ada, None).await;
        assert_eq!(status, 200);
        server.report(&ada, &task, 2, "completed").await;
        let mail = parse(&smtp.next().await.data);
        assert_eq!(mail.subject, "✅ Your CRM is ready!");
        assert!(mail.text.contains("CRM: 100%, completed"), "{}", mail.text);

        let log = email_log(&server, &ada, 2).await;
        let events: Vec<&str> = log.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["approval_needed", "task_complete"]);
        for entry in &log {
            assert_eq!((entry["target"].as_str(), entry["outcome"].as_str()), (Some("ada@example.com"), Some("delivered")), "{entry}");
            assert_eq!((entry["attempt"].as_i64(), entry["detail"].as_str()), (Some(1), Some("250 2.0.0 queued")), "{entry}");
        }
        server.stop().await;
    }

    async fn only_long_tasks_are_mailed_by_default(backend: Backend) {
        let db = TestDb::new(backend);
        let mut smtp = SmtpServer::start(Vec::new());
        // The default threshold, 600 s.
        let server = Server::start(&db, with_email(&smtp.url)).await;
        let ada = server.token("ada").await;
        set_preferences(&server, &ada, json!({"email": "ada@example.com"})).await;
        let long = task_of(&server, &ada, "Migration", 20).await;
        let short = task_of(&server, &ada, "Ping", 1).await;
        let (long_eta, short_eta) = (eta_of(&server, &ada, &long).await, eta_of(&server, &ada, &short).await);
        assert!(long_eta > 600 && short_eta < 600, "the cold-start estimates: {long_eta} s and {short_eta} s");

        server.report(&ada, &short, 1, "completed").await;
        server.report(&ada, &long, 1, "failed").await;
        // One worker mails a user's messages in order: had the short task's completion been
        // mailed, it would have come first.
        let mail = parse(&smtp.next().await.data);
        assert_eq!(mail.subject, "❌ Task failed at Step 1");
        assert!(mail.text.contains(&format!("/tasks/{long}")), "{}", mail.text);
        let log = email_log(&server, &ada, 1).await;
        assert_eq!((log.len(), log[0]["task_id"].as_str()), (1, Some(long.as_str())));

        // Without the rule, the short task is mailed too.
        set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false})).await;
        let again = task_of(&server, &ada, "Ping", 1).await;
        server.report(&ada, &again, 1, "completed").await;
        assert_eq!(parse(&smtp.next().await.data).subject, "✅ Your Ping is ready!");
        server.stop().await;
    }

    async fn the_estimate_at_start_still_decides_after_a_restart(backend: Backend) {
        let db = std::sync::Arc::new(TestDb::new(backend));
        let mut smtp = SmtpServer::start(Vec::new());
        let (first, url) = (std::sync::Arc::clone(&db), smtp.url.clone());
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let created = std::sync::Arc::clone(&kept);
        in_own_system(move || async move {
            let server = Server::start(&first, with_email(&url)).await;
            let ada = server.token("ada").await;
            set_preferences(&server, &ada, json!({"email": "ada@example.com"})).await;
            let long = task_of(&server, &ada, "Migration", 20).await;
            let short = task_of(&server, &ada, "Ping", 1).await;
            let database = std::sync::Arc::clone(server.runtime.db());
            eventually("both estimates at start are kept", || {
                let mut conn = database.conn().unwrap();
                [&long, &short].iter().all(|task| db::start_estimate(&mut conn, task).unwrap().is_some())
            })
            .await;
            server.stop().await;
            created.lock().unwrap().extend([ada, long, short]);
        });
        let [ada, long, short] = kept.lock().unwrap().clone().try_into().expect("a token and two tasks");

        // Seconds after it started, the long task has not run 600 s: only its estimate at
        // start, read back from the database, makes it long.
        let server = Server::start(&db, with_email(&smtp.url)).await;
        server.report(&ada, &short, 1, "completed").await;
        server.report(&ada, &long, 1, "failed").await;
        let mail = parse(&smtp.next().await.data);
        assert_eq!(mail.subject, "❌ Task failed at Step 1");
        assert!(mail.text.contains(&format!("/tasks/{long}")), "{}", mail.text);
        server.stop().await;
    }

    async fn preferences_switch_email_per_event_and_need_an_address(backend: Backend) {
        let db = TestDb::new(backend);
        let mut smtp = SmtpServer::start(Vec::new());
        let server = Server::start(&db, with_email(&smtp.url)).await;
        let ada = server.token("ada").await;
        let mut chat = Receiver::accepting();

        // No address: nothing is mailed. The chat message shows the completion was handled.
        set_preferences(&server, &ada, json!({"chat_webhook_url": chat.url, "channels": {"chat": ["task_complete"], "email": ["task_started", "task_complete"]}})).await;
        let unmailed = task_of(&server, &ada, "Quiet", 1).await;
        server.report(&ada, &unmailed, 1, "completed").await;
        assert_eq!(chat.next().await.0, "✅ Your Quiet is ready!");

        // Only starts: the start is mailed (once its estimate is known), the completion not.
        let stored = set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false, "chat_webhook_url": chat.url, "channels": {"chat": ["task_complete"], "email": ["task_started", "task_started"]}})).await;
        assert_eq!(stored["channels"]["email"], json!(["task_started"]));
        assert_eq!(stored["email"], "ada@example.com");
        let started = task_of(&server, &ada, "Import", 1).await;
        assert_eq!(parse(&smtp.next().await.data).subject, "Your Import task has started");
        server.report(&ada, &started, 1, "completed").await;
        // Preferences are read when an event is handled: wait until this one was.
        assert_eq!(chat.next().await.0, "✅ Your Import is ready!");

        // Only completions: the next mail is this task's completion, not the last one's.
        set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false, "channels": {"email": ["task_complete"]}})).await;
        let completed = task_of(&server, &ada, "Export", 2).await;
        server.report(&ada, &completed, 1, "completed").await;
        server.report(&ada, &completed, 2, "completed").await;
        let mail = parse(&smtp.next().await.data);
        assert_eq!(mail.subject, "✅ Your Export is ready!");
        let log = email_log(&server, &ada, 2).await;
        let events: Vec<&str> = log.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["task_started", "task_complete"]);

        for bad in ["ada", "ada@", "Ada <ada@example.com>", "ada @example.com"] {
            let (status, answer) = server.call("PUT", "/api/notifications/preferences", &ada, Some(json!({"email": bad}))).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {answer}");
        }
        let (status, answer) = server.call("PUT", "/api/notifications/preferences", &ada, Some(json!({"channels": {"email": ["lunch"]}}))).await;
        assert_eq!(status, 400, "{answer}");
        server.stop().await;
    }

    async fn a_dead_smtp_server_delays_no_other_channel_and_is_logged(backend: Backend) {
        let db = TestDb::new(backend);
        let silent = SmtpServer::silent();
        // One attempt of 8 s: the mail waits for a greeting that never comes.
        let settings = NotificationSettings { timeout_s: 8, max_attempts: 1, ..with_email(&silent) };
        let server = Server::start(&db, settings).await;
        let ada = server.token("ada").await;
        let mut chat = Receiver::accepting();
        set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false, "chat_webhook_url": chat.url, "channels": {"email": ["task_started", "step_complete", "task_complete"]}})).await;
        let begun = Instant::now();
        let task = task_of(&server, &ada, "CRM", 1).await;
        assert_eq!(chat.next().await.0, "Your CRM task has started");
        server.report(&ada, &task, 1, "completed").await;
        assert_eq!(chat.texts(2).await, ["Step 1 complete: Part 1", "✅ Your CRM is ready!"]);
        assert!(begun.elapsed() < Duration::from_secs(8), "chat waited for the mail: {:?}", begun.elapsed());
        assert!(email_log(&server, &ada, 0).await.is_empty(), "the mail is still waiting for its server");

        let log = email_log(&server, &ada, 1).await;
        assert_eq!((log[0]["outcome"].as_str(), log[0]["attempt"].as_i64()), (Some("failed"), Some(1)), "{:#?}", log[0]);
        assert_eq!(log[0]["message"], "Your CRM task has started");

        // A port nobody listens on fails at once, every attempt logged.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("smtp://{}", closed.local_addr().unwrap());
        drop(closed);
        let db = TestDb::new(backend);
        server.stop().await;
        let server = Server::start(&db, NotificationSettings { max_attempts: 2, ..with_email(&url) }).await;
        let bob = server.token("bob").await;
        set_preferences(&server, &bob, json!({"email": "bob@example.com", "email_long_tasks_only": false, "channels": {"email": ["task_started"]}})).await;
        task_of(&server, &bob, "Nowhere", 1).await;
        let log = email_log(&server, &bob, 2).await;
        let attempts: Vec<(i64, &str)> = log.iter().map(|e| (e["attempt"].as_i64().unwrap(), e["outcome"].as_str().unwrap())).collect();
        assert_eq!(attempts, [(1, "failed"), (2, "failed")]);
        assert!(log[0]["detail"].as_str().unwrap().to_lowercase().contains("connection"), "{:#?}", log[0]);
        server.stop().await;
    }

    async fn transient_replies_are_retried_and_permanent_ones_are_not(backend: Backend) {
        let db = TestDb::new(backend);
        let mut smtp = SmtpServer::start(vec![Reply::Transient, Reply::Transient, Reply::Accept, Reply::Permanent]);
        let server = Server::start(&db, NotificationSettings { max_attempts: 4, ..with_email(&smtp.url) }).await;
        let ada = server.token("ada").await;
        set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false, "channels": {"email": ["task_started"]}})).await;
        task_of(&server, &ada, "Retry", 1).await;
        let replies: Vec<(Reply, String)> = {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let received = smtp.next().await;
                seen.push((received.reply, parse(&received.data).subject));
            }
            seen
        };
        let subject = "Your Retry task has started".to_owned();
        assert_eq!(replies, [(Reply::Transient, subject.clone()), (Reply::Transient, subject.clone()), (Reply::Accept, subject)]);
        let log = email_log(&server, &ada, 3).await;
        let attempts: Vec<(i64, &str)> = log.iter().map(|e| (e["attempt"].as_i64().unwrap(), e["outcome"].as_str().unwrap())).collect();
        assert_eq!(attempts, [(1, "failed"), (2, "failed"), (3, "delivered")]);
        assert!(log[0]["detail"].as_str().unwrap().contains("451"), "{:#?}", log[0]);

        // 554: given up at once. The next mail the server sees is the next task's, not a retry.
        task_of(&server, &ada, "Refused", 1).await;
        let refused = smtp.next().await;
        assert_eq!((refused.reply, parse(&refused.data).subject.as_str()), (Reply::Permanent, "Your Refused task has started"));
        task_of(&server, &ada, "After", 1).await;
        let after = smtp.next().await;
        assert_eq!((after.reply, parse(&after.data).subject.as_str()), (Reply::Accept, "Your After task has started"));
        let log = email_log(&server, &ada, 5).await;
        assert_eq!((log[3]["outcome"].as_str(), log[3]["attempt"].as_i64()), (Some("failed"), Some(1)));
        assert!(log[3]["detail"].as_str().unwrap().contains("554"), "{:#?}", log[3]);
        assert_eq!((log[4]["outcome"].as_str(), log[4]["message"].as_str()), (Some("delivered"), Some("Your After task has started")));
        server.stop().await;
    }

    async fn starttls_and_implicit_tls_reach_a_server_the_ca_file_trusts(backend: Backend) {
        let ca = TestCa::new();
        let offers = [
            (Offer::StartTls(Arc::clone(&ca.acceptor)), "?tls=required"),
            (Offer::StartTls(Arc::clone(&ca.acceptor)), "?tls=opportunistic"),
            (Offer::Implicit(Arc::clone(&ca.acceptor)), ""),
        ];
        for (offer, query) in offers {
            let db = TestDb::new(backend);
            let mut smtp = SmtpServer::offering(offer, Vec::new());
            let url = format!("{}{query}", smtp.url);
            let server = Server::start(&db, trusting(&ca, &url)).await;
            let ada = server.token("ada").await;
            set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false, "channels": {"email": ["task_started"]}})).await;
            task_of(&server, &ada, "Secret", 1).await;
            let received = smtp.next().await;
            assert!(received.tls, "{url}: the mail came in the clear");
            assert_eq!(parse(&received.data).subject, "Your Secret task has started", "{url}");
            let log = email_log(&server, &ada, 1).await;
            assert_eq!((log[0]["outcome"].as_str(), log[0]["detail"].as_str()), (Some("delivered"), Some("250 2.0.0 queued")), "{url}");
            server.stop().await;
        }
    }

    async fn required_tls_that_is_untrusted_or_not_offered_sends_nothing_and_is_not_retried(backend: Backend) {
        let ca = TestCa::new();
        // A certificate no root vouches for, and a server with no STARTTLS at all.
        let cases = [
            (SmtpServer::offering(Offer::StartTls(Arc::clone(&ca.acceptor)), Vec::new()), "?tls=required", false, "certificate"),
            (SmtpServer::offering(Offer::Implicit(Arc::clone(&ca.acceptor)), Vec::new()), "", false, "certificate"),
            (SmtpServer::start(Vec::new()), "?tls=required", true, "STARTTLS"),
        ];
        for (mut smtp, query, trusted, reason) in cases {
            let db = TestDb::new(backend);
            let url = format!("{}{query}", smtp.url);
            let settings = if trusted { trusting(&ca, &url) } else { with_email(&url) };
            // Three attempts allowed: a failure that would be retried shows as attempt 2.
            let server = Server::start(&db, NotificationSettings { max_attempts: 3, retry_backoff_ms: 1, ..settings }).await;
            let ada = server.token("ada").await;
            set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false, "channels": {"email": ["task_started"]}})).await;
            task_of(&server, &ada, "Refused", 1).await;
            task_of(&server, &ada, "Next", 1).await;
            // One user's mails go in order, so a retry of the first would come before the second.
            let log = email_log(&server, &ada, 2).await;
            let seen: Vec<(&str, i64, &str)> = log.iter().map(|e| (e["message"].as_str().unwrap(), e["attempt"].as_i64().unwrap(), e["outcome"].as_str().unwrap())).collect();
            assert_eq!(seen, [("Your Refused task has started", 1, "failed"), ("Your Next task has started", 1, "failed")], "{url}: {log:#?}");
            let detail = log[0]["detail"].as_str().unwrap();
            assert!(detail.contains(reason), "{url}: {detail}");
            assert!(!smtp.has_more(), "{url}: a mail reached the server");
            server.stop().await;
        }
    }

    async fn a_tls_handshake_the_network_cuts_short_is_retried(backend: Backend) {
        let db = TestDb::new(backend);
        let smtp = SmtpServer::offering(Offer::HangUpAtStartTls, Vec::new());
        let url = format!("{}?tls=required", smtp.url);
        let server = Server::start(&db, NotificationSettings { max_attempts: 2, retry_backoff_ms: 1, ..with_email(&url) }).await;
        let ada = server.token("ada").await;
        set_preferences(&server, &ada, json!({"email": "ada@example.com", "email_long_tasks_only": false, "channels": {"email": ["task_started"]}})).await;
        task_of(&server, &ada, "Flaky", 1).await;
        let log = email_log(&server, &ada, 2).await;
        let attempts: Vec<(i64, &str)> = log.iter().map(|e| (e["attempt"].as_i64().unwrap(), e["outcome"].as_str().unwrap())).collect();
        assert_eq!(attempts, [(1, "failed"), (2, "failed")], "{log:#?}");
        server.stop().await;
    }
}
