//! `GET /api/cluster`: the servers sharing this database, for operators and balancers'
//! dashboards. Any authenticated caller may read it: it names servers, their addresses and
//! how many tasks each runs, and nothing of any user's tasks.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::wire::ServerDocument;
use super::ApiState;

/// `GET /api/cluster`
pub async fn servers(state: web::Data<ApiState>, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let members = state.runtime.cluster().await?;
    let now = state.runtime.clock().now_ms();
    let servers: Vec<ServerDocument> = members.iter().map(|member| ServerDocument::new(member, now)).collect();
    Ok(HttpResponse::Ok().json(json!({ "servers": servers })))
}
