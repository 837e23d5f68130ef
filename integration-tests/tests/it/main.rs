//! One integration-test binary: the runtime over real databases, and the `stepwise` binary.
//! Every runtime test runs twice, on SQLite (a file per test) and on PostgreSQL (a database
//! per test), through the `on_both_backends!` macro.

mod api_support;
mod http_client;
mod support;
mod webdriver;

mod api;
mod bad_input;
mod binary;
mod chaos;
mod chat;
mod cluster;
mod deploy;
mod embed;
mod exec;
mod lifecycle;
mod metrics;
mod notify;
mod notify_email;
mod notify_push;
mod openapi;
mod outage;
mod ownership;
mod queue;
mod recovery;
mod three_servers;
mod timers;
mod web;
