//! The chat channel: messages posted as `{"text": ...}` to the user's incoming webhook
//! (what Slack, Mattermost and most chat tools accept), throttled into digests and retried
//! as [`super::deliver`] does.

use std::sync::Arc;

use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Body, Request, Uri};

use super::deliver::{self, Inbox, Target, Throttle};
use super::{endpoint, Notice, Shared};

/// One user's chat messages in order.
pub(crate) async fn worker(shared: Arc<Shared>, owner: Arc<str>, mut queue: Inbox<(Notice, Uri)>) {
    let mut throttle = Throttle::new(&shared);
    while let Some(batch) = throttle.next(&mut queue).await {
        // A digest goes to the newest webhook the user gave.
        let Some((notice, uri)) = deliver::digest_to(batch) else { continue };
        let shown = endpoint::origin(&uri);
        let target = Target { owner: &owner, channel: "chat", shown: &shown };
        let body = serde_json::json!({"text": notice.text}).to_string();
        let shared: &Shared = &shared;
        deliver::with_retries(shared, &target, &notice, || {
            let request = Request::post(uri.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(USER_AGENT, concat!("stepwise/", env!("CARGO_PKG_VERSION")))
                .body(Body::from(body.clone()))
                .map_err(|e| format!("cannot build the request: {e}"));
            deliver::http(shared, request, false)
        })
        .await;
    }
}
