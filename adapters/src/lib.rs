//! Stepwise's edges, and the crate that wires everything together: [`app`] turns
//! [`config::Settings`] into an opened database and a started [`runtime::Runtime`],
//! [`embed`] mounts the [`api`] (REST and WebSocket), the [`metrics`] and the [`web`] pages in
//! an actix-web application (under a path of its own, its users signed in its own way),
//! giving each request an id and counting it ([`observe`]), [`http`] is the stand-alone
//! server with health checks, [`terminal`] draws the live progress view the
//! `stepwise demo`, `run` and `watch` commands show, and [`plans`] reads plan files and holds
//! the seed's demo task. The `stepwise` binary (`src/main.rs`) is a thin command line over
//! these; it is the only place that uses `anyhow`.

pub mod api;
pub mod app;
pub mod chat;
pub mod embed;
pub mod http;
mod ids;
pub mod metrics;
pub mod mount;
pub mod notify;
pub mod observe;
pub mod plans;
pub mod remote;
pub mod terminal;
pub mod transcript;
pub mod web;
