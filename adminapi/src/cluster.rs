//! `[cluster]` on the admin side: `GET /v1/admin/cluster`, and keeping the
//! quota counters in Redis seeded from the usage this database has recorded
//! (at start, at each new period, for a new quota, and when Redis comes back
//! empty). See docs/scale-out.md.

use crate::api::Admin;
use crate::{store, SharedState};
use axum::extract::State;
use axum::Json;
use std::sync::Arc;
use switchboard_dataplane::cluster::Cluster;

/// Start the seeder thread for `cluster`, reading usage from `state`'s database.
pub fn start_seeder(state: SharedState, cluster: Arc<Cluster>) -> std::io::Result<()> {
    let spec_state = state.clone();
    switchboard_dataplane::cluster::seed::spawn(
        cluster,
        Box::new(move || spec_state.current().spec.clone()),
        Box::new(move |column, value, start| {
            state.read(|c| store::spent_since(c, column, value, start)).map_err(|e| e.message.to_string())
        }),
    )
}

/// Redis's state as this process sees it, and the cluster's counters.
#[utoipa::path(get, path = "/v1/admin/cluster", tag = "data planes", responses((status = 200, description = "Redis health, on_redis_down and the cluster counters of this process"), (status = 401, body = crate::api::ErrorBody)), security(("admin_token" = [])))]
pub async fn get_cluster(State(_s): State<SharedState>, _a: Admin) -> Json<serde_json::Value> {
    Json(match switchboard_dataplane::cluster::current() {
        Some(c) => {
            let mut v = c.status();
            v["enabled"] = serde_json::Value::Bool(true);
            v
        }
        None => serde_json::json!({"object": "cluster", "enabled": false}),
    })
}
