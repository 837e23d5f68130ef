//! Each user's notification preferences: which events reach them on which channel, and the
//! endpoints they gave. Stored whole as a JSON document (`db` keeps it opaque); a user who
//! never saved any gets [`Preferences::default`].

use std::sync::Arc;

use db::Database;
use serde::{Deserialize, Serialize};

use super::endpoint;

/// The events people are told about, named as on the WebSocket and in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// "Your CRM task has started"
    TaskStarted,
    /// "Step 1 complete: Database created"
    StepComplete,
    /// "⚠️ Approval required for Step 3"
    ApprovalNeeded,
    /// "✅ Your CRM is ready!"
    TaskComplete,
    /// "❌ Task failed at Step 2"
    TaskFailed,
}

impl NotifyEvent {
    /// All of them, in the order a task meets them.
    pub const ALL: [NotifyEvent; 5] = [
        NotifyEvent::TaskStarted,
        NotifyEvent::StepComplete,
        NotifyEvent::ApprovalNeeded,
        NotifyEvent::TaskComplete,
        NotifyEvent::TaskFailed,
    ];

    /// The event's name, e.g. `step_complete`.
    pub fn name(self) -> &'static str {
        match self {
            NotifyEvent::TaskStarted => "task_started",
            NotifyEvent::StepComplete => "step_complete",
            NotifyEvent::ApprovalNeeded => "approval_needed",
            NotifyEvent::TaskComplete => "task_complete",
            NotifyEvent::TaskFailed => "task_failed",
        }
    }
}

/// Which events each channel carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    /// Desktop notifications the progress page shows from its WebSocket while it is open
    /// (the page reads this; the server sends nothing for it).
    #[serde(default = "all_events")]
    pub browser: Vec<NotifyEvent>,
    /// Messages posted to `chat_webhook_url`.
    #[serde(default = "all_events")]
    pub chat: Vec<NotifyEvent>,
    /// Web push to every subscribed browser and phone.
    #[serde(default = "all_events")]
    pub push: Vec<NotifyEvent>,
    /// Mail to `email`. By default only what a person away from the screen must hear about:
    /// approvals, completions and failures.
    #[serde(default = "email_events")]
    pub email: Vec<NotifyEvent>,
}

impl Default for Channels {
    fn default() -> Self {
        Channels { browser: all_events(), chat: all_events(), push: all_events(), email: email_events() }
    }
}

fn all_events() -> Vec<NotifyEvent> {
    NotifyEvent::ALL.to_vec()
}

fn email_events() -> Vec<NotifyEvent> {
    vec![NotifyEvent::ApprovalNeeded, NotifyEvent::TaskComplete, NotifyEvent::TaskFailed]
}

fn yes() -> bool {
    true
}

/// A user's preferences: `GET` and `PUT /api/notifications/preferences`. A `PUT` replaces
/// them; a field it leaves out takes its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Where chat messages are posted as `{"text": ...}` (Slack, Mattermost and most chat
    /// tools' incoming webhooks); none: no chat messages.
    #[serde(default)]
    pub chat_webhook_url: Option<String>,
    /// The address mail goes to; none: no mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Mail only about long tasks: those estimated at start to take more than the server's
    /// `notifications.email.long_task_seconds`. On by default.
    #[serde(default = "yes")]
    pub email_long_tasks_only: bool,
    /// Which events go to which channel.
    #[serde(default)]
    pub channels: Channels,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences { chat_webhook_url: None, email: None, email_long_tasks_only: true, channels: Channels::default() }
    }
}

impl Preferences {
    /// Checks the endpoints (what can be checked before connecting) and puts each channel's
    /// events in their canonical order without repeats.
    pub fn validated(mut self, allow_private: bool) -> Result<Preferences, String> {
        if let Some(url) = &self.chat_webhook_url {
            endpoint::check_url(url, allow_private).map_err(|refused| format!("chat_webhook_url: {refused}"))?;
        }
        if let Some(address) = &self.email {
            // A recipient, not an endpoint the server connects to: the operator's SMTP server
            // does the connecting, so the address rule of webhooks does not apply.
            address
                .parse::<lettre::Address>()
                .map_err(|error| format!("email: {address:?} is not an address ({error})"))?;
        }
        let channels = &mut self.channels;
        for events in [&mut channels.browser, &mut channels.chat, &mut channels.push, &mut channels.email] {
            events.sort();
            events.dedup();
        }
        Ok(self)
    }
}

/// Why preferences could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum PrefsError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The blocking pool is gone (the server is stopping).
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// `user`'s preferences, the defaults if they saved none. A stored document that no longer
/// parses is logged and read as the defaults rather than silencing the user for good.
pub async fn load(db: &Arc<Database>, user: &str) -> Result<Preferences, PrefsError> {
    let (db, owner) = (Arc::clone(db), user.to_owned());
    let stored = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        db::notification_preferences(&mut conn, &owner)
    })
    .await
    .map_err(|_| PrefsError::ShuttingDown)??;
    Ok(match stored {
        None => Preferences::default(),
        Some(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
            tracing::warn!(%error, user, "stored notification preferences do not parse; using the defaults");
            Preferences::default()
        }),
    })
}

/// Saves `user`'s (validated) preferences.
pub async fn save(db: &Arc<Database>, user: &str, preferences: &Preferences, now: i64) -> Result<(), PrefsError> {
    let document = serde_json::to_string(preferences).unwrap_or_default();
    let (db, owner) = (Arc::clone(db), user.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        db::save_notification_preferences(&mut conn, &owner, &document, now)
    })
    .await
    .map_err(|_| PrefsError::ShuttingDown)??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_send_every_event_to_every_channel() {
        let defaults = Preferences::default();
        assert_eq!(defaults.channels.browser, NotifyEvent::ALL);
        assert_eq!(defaults.channels.chat, NotifyEvent::ALL);
        assert_eq!(defaults.channels.push, NotifyEvent::ALL);
        assert_eq!(serde_json::from_str::<Preferences>("{}").unwrap(), defaults);
    }

    #[test]
    fn email_defaults_to_what_needs_a_person_and_only_long_tasks() {
        let defaults = Preferences::default();
        let wanted = [NotifyEvent::ApprovalNeeded, NotifyEvent::TaskComplete, NotifyEvent::TaskFailed];
        assert_eq!(defaults.channels.email, wanted);
        assert!(defaults.email_long_tasks_only);
        assert_eq!(defaults.email, None);
        let sent: Preferences =
            serde_json::from_str(r#"{"email": "ada@example.com", "channels": {"chat": []}}"#).unwrap();
        assert_eq!(sent.channels.email, wanted, "a channel left out keeps its default");
        assert!(sent.clone().validated(false).is_ok());
        for bad in ["ada", "ada@", "@example.com", "ada example@example.com", "Ada <ada@example.com>"] {
            let prefs = Preferences { email: Some(bad.to_owned()), ..Preferences::default() };
            assert!(prefs.validated(false).unwrap_err().starts_with("email: "), "{bad}");
        }
    }

    #[test]
    fn validation_orders_events_and_checks_the_webhook() {
        let sent: Preferences = serde_json::from_str(
            r#"{"chat_webhook_url": "https://hooks.example.com/x", "channels": {"chat": ["task_failed", "task_started", "task_failed"]}}"#,
        )
        .unwrap();
        let valid = sent.validated(false).unwrap();
        assert_eq!(valid.channels.chat, [NotifyEvent::TaskStarted, NotifyEvent::TaskFailed]);
        assert_eq!(valid.channels.browser, NotifyEvent::ALL);
        let private =
            Preferences { chat_webhook_url: Some("http://127.0.0.1:9/x".to_owned()), ..Preferences::default() };
        assert!(private.clone().validated(false).unwrap_err().starts_with("chat_webhook_url: "));
        assert!(private.validated(true).is_ok());
    }
}
