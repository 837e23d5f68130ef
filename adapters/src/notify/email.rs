//! The email channel: mail through the SMTP server the operator configures
//! (`notifications.email.smtp_url`, plain, STARTTLS or implicit TLS, with lettre; the
//! certificates in `notifications.email.ca_file` trusted besides the system's roots), to the
//! address each user gives. A mail is multipart/alternative, plain text and HTML: the seed's
//! message as subject and headline, the task's progress (title, percent, "Step N of M: name",
//! each step's status) and a link to its progress page, `{public_url}/tasks/{task_id}`.
//!
//! Which mails go out is decided by the user's worker in [`super`]; this module delivers them
//! as the other channels do ([`super::deliver`]): one worker per user, throttled into
//! digests, a timeout per attempt, retried on transient failures (SMTP `4xx`, a server that
//! cannot be reached or does not answer) and given up on permanent ones (`5xx`, TLS the
//! library refused, STARTTLS required but not offered). The SMTP
//! server is the operator's, not a user's, so the private-address rule of webhooks does not
//! apply to it; users' addresses are only recipients.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{NotificationSettings, SmtpTls, SmtpUrl};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use runtime::{task_percent, StoredTask};

use super::deliver::{self, Attempt, Inbox, Target, Throttle};
use super::{Notice, Shared};

/// Why email cannot be set up; the server does not start without it.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// `notifications.email.smtp_url` does not parse (validation lets none through).
    #[error("notifications.email.smtp_url: {0}")]
    Url(String),
    /// `notifications.email.from` is not an address (validation lets none through).
    #[error("notifications.email.from: {0}")]
    From(#[from] lettre::address::AddressError),
    /// `notifications.email.ca_file` cannot be read or holds a certificate that does not
    /// parse (validation read it once already; it may have changed since).
    #[error("notifications.email.ca_file {path:?}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The TLS connector could not be made.
    #[error("cannot set up TLS for {server}: {source}")]
    Tls {
        /// The SMTP server, password hidden.
        server: String,
        /// What lettre said.
        source: lettre::transport::smtp::Error,
    },
}

/// The SMTP transport and the sender: what every mail needs.
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer the settings describe, or `None` when email is off (no `smtp_url`).
    pub(crate) fn new(settings: &NotificationSettings) -> Result<Option<Mailer>, EmailError> {
        let Some(url) = settings.email.smtp() else { return Ok(None) };
        let url: SmtpUrl = url.map_err(EmailError::Url)?;
        let from: Mailbox = settings.email.from.parse()?;
        let roots = match &settings.email.ca_file {
            Some(path) => trusted_roots(path)?,
            None => Vec::new(),
        };
        let parameters = || {
            let builder = roots
                .iter()
                .cloned()
                .fold(TlsParameters::builder(url.host.clone()), |builder, root| builder.add_root_certificate(root));
            builder.build().map_err(|source| EmailError::Tls { server: url.to_string(), source })
        };
        let tls = match url.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Opportunistic => Tls::Opportunistic(parameters()?),
            SmtpTls::Required => Tls::Required(parameters()?),
            SmtpTls::Implicit => Tls::Wrapper(parameters()?),
        };
        // `builder_dangerous` only means "TLS as set here", which the URL chose.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.as_str())
            .port(url.port)
            .tls(tls)
            // Each command's own limit; the whole attempt is bounded by `deliver` too.
            .timeout(Some(Duration::from_secs(settings.timeout_s)));
        if let Some((user, password)) = &url.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Some(Mailer { transport: builder.build(), from }))
    }

    /// One attempt at handing `message` to the SMTP server.
    async fn send(&self, message: Message) -> Attempt {
        match self.transport.send(message).await {
            Ok(response) => {
                let line = response.first_line().unwrap_or_default();
                Attempt::Delivered(format!("{} {line}", response.code()).trim_end().to_owned())
            }
            // 5xx, a mail lettre itself refuses (STARTTLS required but not offered among
            // them), or TLS the library refused: sending it again would fail the same way
            // until someone changes something.
            Err(error) if error.is_permanent() || error.is_client() || error.is_tls() || tls_refused(&error) => {
                Attempt::GiveUp { outcome: "failed", detail: error.to_string() }
            }
            Err(error) => Attempt::Retry { detail: error.to_string(), after: None },
        }
    }
}

/// Whether `error` is a TLS handshake the TLS library refused (a certificate no trusted root
/// signed, a name that does not match, no protocol in common) rather than one the network cut
/// short, which may well work next time. A refusal carries the library's own reason beneath
/// the TLS error; a network failure carries an I/O error there, or nothing at all when the
/// peer just closed the connection mid-handshake ("unexpected EOF").
fn tls_refused(error: &lettre::transport::smtp::Error) -> bool {
    let mut refused = false;
    for cause in std::iter::successors(std::error::Error::source(error), |cause| cause.source()) {
        if cause.is::<std::io::Error>() {
            return false;
        }
        if cause.is::<native_tls::Error>() {
            refused = cause.source().is_some();
        }
    }
    refused
}

/// Every certificate in the PEM file at `path`, to trust besides the system's roots. Each
/// block is parsed on its own: a bundle holds several, and a PEM parser reads only one.
fn trusted_roots(path: &Path) -> Result<Vec<Certificate>, EmailError> {
    let failed = |reason: String| EmailError::CaFile { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|error| failed(format!("cannot read it: {error}")))?;
    const END: &str = "-----END CERTIFICATE-----";
    let roots = text
        .match_indices("-----BEGIN CERTIFICATE-----")
        .map(|(start, _)| {
            let end = text[start..]
                .find(END)
                .map(|at| start + at + END.len())
                .ok_or_else(|| failed(format!("the certificate at byte {start} has no {END} line")))?;
            Certificate::from_pem(&text.as_bytes()[start..end])
                .map_err(|error| failed(format!("the certificate at byte {start} does not parse: {error}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if roots.is_empty() {
        return Err(failed("it holds no PEM certificate".to_owned()));
    }
    Ok(roots)
}

/// One user's mails in order.
pub(crate) async fn worker(shared: Arc<Shared>, owner: Arc<str>, mut queue: Inbox<(Notice, Mailbox)>) {
    let mut throttle = Throttle::new(&shared);
    while let Some(batch) = throttle.next(&mut queue).await {
        let Some(mailer) = shared.mailer.as_ref() else { return };
        // A digest goes to the newest address the user gave.
        let Some((notice, to)) = deliver::digest_to(batch) else { continue };
        let shown = to.email.to_string();
        let target = Target { owner: &owner, channel: "email", shown: &shown };
        let task = load_task(&shared, &owner, &notice.task_id).await;
        let message = match mail(&mailer.from, to, &notice, task.as_ref(), &shared.config.public_url) {
            Ok(message) => message,
            Err(error) => {
                let detail = format!("cannot build the mail: {error}");
                deliver::record(&shared, &target, &notice, 1, "failed", Some(detail)).await;
                continue;
            }
        };
        deliver::with_retries(&shared, &target, &notice, || mailer.send(message.clone())).await;
    }
}

/// The task as stored now, for the mail's summary; a mail without one still goes out.
/// The task the mail is about, if it is `owner`'s: a mail never shows another user's task.
async fn load_task(shared: &Shared, owner: &str, task_id: &str) -> Option<StoredTask> {
    let db = shared.db()?;
    let id = task_id.to_owned();
    let loaded = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        db::load_task(&mut conn, &id)
    })
    .await;
    match loaded {
        Ok(Ok(task)) => task.filter(|task| task.task.owner == owner),
        Ok(Err(error)) => {
            tracing::warn!(%error, task_id = task_id, "cannot read the task for its mail; sending it without the progress");
            None
        }
        Err(_) => None,
    }
}

/// The mail for `notice`: subject and headline from its text, `task`'s progress, and the link
/// to the task's page under `public_url`.
pub fn mail(
    from: &Mailbox,
    to: Mailbox,
    notice: &Notice,
    task: Option<&StoredTask>,
    public_url: &str,
) -> Result<Message, lettre::error::Error> {
    let link = format!("{}/tasks/{}", public_url.trim_end_matches('/'), notice.task_id);
    // A digest's first line ("3 updates:") is its subject.
    let subject = notice.text.lines().next().unwrap_or_default().trim_end_matches(':');
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(text_body(notice, task, &link), html_body(notice, task, &link)))
}

/// The task's summary lines: "CRM: 45%, running", "Step 2 of 3: Schema loaded".
fn summary(task: &StoredTask) -> (String, Option<String>) {
    let record = &task.task;
    let headline = format!("{}: {}%, {}", record.title, task_percent(task), record.status.as_str());
    let step =
        runtime::current_step(task).map(|step| format!("Step {} of {}: {}", step.order, task.steps.len(), step.name));
    (headline, step)
}

/// The plain-text part.
pub fn text_body(notice: &Notice, task: Option<&StoredTask>, link: &str) -> String {
    let mut text = format!("{}\n\n", notice.text);
    if let Some(task) = task {
        let (headline, step) = summary(task);
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{headline}");
        if let Some(step) = step {
            let _ = writeln!(text, "{step}");
        }
        text.push('\n');
        for step in &task.steps {
            let _ = writeln!(text, "{}. {}: {}", step.order, step.name, step.status.as_str());
        }
        text.push('\n');
    }
    let _ = writeln!(text, "Progress: {link}");
    text
}

/// The HTML part: the same as the text, every piece of it escaped.
pub fn html_body(notice: &Notice, task: Option<&StoredTask>, link: &str) -> String {
    let mut html = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n");
    let headline = notice.text.lines().map(escape_html).collect::<Vec<_>>().join("<br>\n");
    let _ = writeln!(html, "<p><strong>{headline}</strong></p>");
    if let Some(task) = task {
        let (summary, step) = summary(task);
        let _ = writeln!(html, "<p>{}</p>", escape_html(&summary));
        if let Some(step) = step {
            let _ = writeln!(html, "<p>{}</p>", escape_html(&step));
        }
        html.push_str("<ol>\n");
        for step in &task.steps {
            let _ = writeln!(html, "<li>{}: {}</li>", escape_html(&step.name), step.status.as_str());
        }
        html.push_str("</ol>\n");
    }
    let link = escape_html(link);
    let _ = writeln!(html, "<p><a href=\"{link}\">See the progress</a>: {link}</p>\n</body></html>");
    html
}

/// `text` safe inside HTML elements and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use db::{StepRecord, StepStatus, TaskRecord, TaskStatus};

    use super::*;

    fn step(order: u32, name: &str, status: StepStatus) -> StepRecord {
        StepRecord {
            order,
            name: name.to_owned(),
            kind: "external".to_owned(),
            params: "{}".to_owned(),
            requires_approval: false,
            skippable: false,
            approved: false,
            status,
            progress: 0,
            attempts: 0,
            started_at: None,
            finished_at: None,
            work_ms: 0,
            error: None,
            output: None,
            estimate_ms: None,
            policy: None,
            due_at: None,
            remind_at: None,
            substeps: Vec::new(),
        }
    }

    fn task() -> StoredTask {
        StoredTask {
            task: TaskRecord {
                id: "t1".to_owned(),
                owner: "ada".to_owned(),
                title: "CRM <beta> & \"friends\"".to_owned(),
                complexity: 1,
                status: TaskStatus::Running,
                restarted_from: None,
                created_at: 0,
                started_at: Some(0),
                finished_at: None,
                updated_at: 0,
                error: None,
                last_seq: 3,
                lease_token: 1,
            },
            steps: vec![
                step(1, "Database created", StepStatus::Completed),
                step(2, "Schema <loaded>", StepStatus::Running),
                step(3, "Users imported", StepStatus::Pending),
            ],
        }
    }

    fn notice(text: &str) -> Notice {
        Notice { task_id: "t1".to_owned(), event: "step_complete", text: text.to_owned(), approval_step: None }
    }

    #[test]
    fn the_text_part_has_the_message_the_progress_and_the_link() {
        let text = text_body(&notice("Step 1 complete: Database created"), Some(&task()), "https://x.example/tasks/t1");
        let expected = "Step 1 complete: Database created\n\n\
            CRM <beta> & \"friends\": 33%, running\n\
            Step 2 of 3: Schema <loaded>\n\n\
            1. Database created: completed\n\
            2. Schema <loaded>: running\n\
            3. Users imported: pending\n\n\
            Progress: https://x.example/tasks/t1\n";
        assert_eq!(text, expected);
        let bare = text_body(&notice("✅ Your CRM is ready!"), None, "https://x.example/tasks/t1");
        assert_eq!(bare, "✅ Your CRM is ready!\n\nProgress: https://x.example/tasks/t1\n");
    }

    #[test]
    fn the_html_part_escapes_everything_it_shows() {
        let html =
            html_body(&notice("2 updates:\n• <b>x</b>"), Some(&task()), "https://x.example/tasks/t1?a=1&b=\"2\"");
        assert!(html.contains("<strong>2 updates:<br>\n• &lt;b&gt;x&lt;/b&gt;</strong>"), "{html}");
        assert!(html.contains("<p>CRM &lt;beta&gt; &amp; &quot;friends&quot;: 33%, running</p>"), "{html}");
        assert!(html.contains("<p>Step 2 of 3: Schema &lt;loaded&gt;</p>"), "{html}");
        assert!(html.contains("<li>Schema &lt;loaded&gt;: running</li>"), "{html}");
        assert!(html.contains("<a href=\"https://x.example/tasks/t1?a=1&amp;b=&quot;2&quot;\">"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<beta>"), "{html}");
        assert_eq!(escape_html("it's <a & b>"), "it&#39;s &lt;a &amp; b&gt;");
    }

    #[test]
    fn email_is_off_without_a_server_and_every_tls_mode_builds() {
        assert!(Mailer::new(&NotificationSettings::default()).unwrap().is_none());
        let urls = [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com?tls=opportunistic",
            "smtp://mail.example.com?tls=required",
            "smtps://ops:secret@mail.example.com",
        ];
        for url in urls {
            let email = config::EmailSettings { smtp_url: Some(url.to_owned()), ..config::EmailSettings::default() };
            let settings = NotificationSettings { email, ..NotificationSettings::default() };
            assert!(Mailer::new(&settings).unwrap().is_some(), "{url}");
        }
    }

    #[test]
    fn a_ca_file_that_does_not_parse_stops_email_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "does not parse"),
            ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n", "has no -----END CERTIFICATE----- line"),
            ("nothing here\n", "it holds no PEM certificate"),
        ];
        for (i, (text, reason)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.pem"));
            std::fs::write(&path, text).unwrap();
            let email = config::EmailSettings {
                smtp_url: Some("smtp://mail.example.com?tls=required".to_owned()),
                ca_file: Some(path.clone()),
                ..config::EmailSettings::default()
            };
            let settings = NotificationSettings { email, ..NotificationSettings::default() };
            let error = Mailer::new(&settings).err().expect("an error").to_string();
            assert!(error.starts_with(&format!("notifications.email.ca_file {path:?}: ")), "{error}");
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn a_mail_is_multipart_alternative_with_both_parts() {
        let from: Mailbox = "Stepwise <stepwise@example.com>".parse().unwrap();
        let to: Mailbox = "ada@example.com".parse().unwrap();
        let message = mail(&from, to, &notice("3 updates:\n• a\n• b\n• c"), Some(&task()), "http://127.0.0.1:8080/")
            .unwrap()
            .formatted();
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains("From: Stepwise <stepwise@example.com>\r\n"), "{text}");
        assert!(text.contains("To: ada@example.com\r\n"), "{text}");
        assert!(text.contains("Subject: 3 updates\r\n"), "a digest's subject is its first line: {text}");
        assert!(text.contains("Content-Type: multipart/alternative;"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"), "{text}");
        assert!(text.contains("Content-Type: text/html; charset=utf-8"), "{text}");
        assert!(text.contains("http://127.0.0.1:8080/tasks/t1"), "the link, without a double slash: {text}");
    }
}
