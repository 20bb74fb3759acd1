//! Admin API request bodies (node enrollment and heartbeats included), usage
//! batches and report times: deserializing and checking any bytes never
//! panics, and usage is always clamped to the documented maxima.
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
    // Usage from a remote data plane or a node: clamped to the documented
    // maxima, idempotently, whatever it says.
    if let Ok(batch) = serde_json::from_slice::<switchboard_shared::usage::UsageBatch>(data) {
        use switchboard_shared::limits::{MAX_COST_NANOS_PER_REQUEST, MAX_TOKENS_PER_REQUEST};
        for mut r in batch.records {
            let clamped = r.sanitize();
            assert!(r.prompt_tokens <= MAX_TOKENS_PER_REQUEST && r.completion_tokens <= MAX_TOKENS_PER_REQUEST);
            assert!(r.total_tokens <= MAX_TOKENS_PER_REQUEST && r.cost_nanos <= MAX_COST_NANOS_PER_REQUEST);
            let again = r.clone();
            assert_eq!(r.sanitize(), clamped);
            assert_eq!(r, again);
        }
    }
    // Report times: any text is a time in range or a 422, never a panic.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = switchboard_adminapi::usage::parse_time("from", text) {
            assert!((0..=switchboard_shared::limits::EXPIRES_AT_S.max as i64).contains(&t));
        }
    }
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
