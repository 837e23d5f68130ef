//! One integration-test binary: the runtime over real databases, and the `stepwise` binary.
//! Every runtime test runs twice, on SQLite (a file per test) and on PostgreSQL (a database
//! per test), through the `on_both_backends!` macro.

mod api_support;
mod support;

mod api;
mod bad_input;
mod binary;
mod chat;
mod exec;
mod lifecycle;
mod notify;
mod notify_email;
mod notify_push;
mod openapi;
mod ownership;
mod recovery;
mod web;
