//! Admin API request bodies (node enrollment and heartbeats included):
//! deserializing and checking any bytes never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_adminapi::model::{
    AdminTokenCreate, KeyCreate, KeyUpdate, OrgInput, ProviderCreate, ProviderUpdate, RouteCreate, RouteUpdate,
};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<OrgInput>(data);
    let _ = serde_json::from_slice::<KeyCreate>(data);
    let _ = serde_json::from_slice::<KeyUpdate>(data);
    let _ = serde_json::from_slice::<ProviderUpdate>(data);
    let _ = serde_json::from_slice::<RouteUpdate>(data);
    let _ = serde_json::from_slice::<AdminTokenCreate>(data);
    let _ = serde_json::from_slice::<switchboard_shared::KeyLimits>(data);
    let _ = serde_json::from_slice::<switchboard_shared::OrgLimits>(data);
    let _ = serde_json::from_slice::<switchboard_shared::usage::UsageBatch>(data);
    let _ = serde_json::from_slice::<switchboard_adminapi::nodes::EnrollmentTokenCreate>(data);
    let _ = serde_json::from_slice::<switchboard_adminapi::nodes::NodeUpdate>(data);
    let _ = serde_json::from_slice::<switchboard_shared::node::EnrollRequest>(data);
    // A node's heartbeat is checked field by field without panicking.
    if let Ok(h) = serde_json::from_slice::<switchboard_shared::node::Heartbeat>(data) {
        let _ = switchboard_adminapi::nodes::check_heartbeat(&h);
    }
    // A snapshot spec from the admin (nodes included) validates without panicking.
    if let Ok(spec) = serde_json::from_slice::<switchboard_shared::RoutingSpec>(data) {
        let _ = spec.validate();
    }
    if let Ok(p) = serde_json::from_slice::<ProviderCreate>(data) {
        let _ = p.into_parts();
    }
    if let Ok(r) = serde_json::from_slice::<RouteCreate>(data) {
        let _ = r.into_parts();
    }
});
