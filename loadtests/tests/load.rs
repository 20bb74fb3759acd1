//! The load generator measures what it claims: tokens, failures, streaming
//! timing, and latency from the intended send time in open loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use switchboard_loadtests::load::client::Target;
use switchboard_loadtests::load::workload::Workload;
use switchboard_loadtests::load::{run, LoadConfig, Mode};
use switchboard_loadtests::{MockConfig, MockHandle, MockUpstream};

fn target(m: &MockHandle) -> Target {
    Target { label: "mock".into(), addr: m.addr, host_header: m.addr.to_string(), path_prefix: "/v1".into(), tls: None }
}

fn config(m: &MockHandle, mock: &str) -> LoadConfig {
    LoadConfig {
        target: target(m),
        baseline: None,
        workload: Workload {
            path: "/chat/completions".into(),
            prompt_bytes: 1024,
            stream_ratio: 0.0,
            include_usage: true,
            fail_ratio: 0.0,
            keys: vec!["k".into()],
            models: vec!["m".into()],
            mock: Some(mock.into()),
            unique: true,
        },
        mode: Mode::Closed,
        connections: 4,
        threads: 1,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(500),
        max_requests: 2_000,
        timeout: Duration::from_secs(5),
        slices: 2,
        pid: Some(std::process::id()),
        upstream_pid: None,
        progress: false,
        seed: 7,
    }
}

#[test]
fn counts_requests_tokens_and_expected_failures() {
    let m = MockUpstream::start(MockConfig::default()).unwrap();
    let mut cfg = config(&m, r#"{"tokens":5}"#);
    cfg.workload.stream_ratio = 0.5;
    cfg.workload.fail_ratio = 0.2;
    let r = run(&cfg).unwrap();
    let g = &r.gateway;
    assert!(g.ok > 50, "{}", g.ok);
    assert!(g.expected_failures > 5, "{}", g.expected_failures);
    assert!(g.errors.is_empty(), "{:?}", g.errors);
    assert!(g.streams > 10);
    // Every successful request carried 5 tokens, none lost.
    assert_eq!(g.tokens, g.ok * 5);
    assert_eq!(g.lost_tokens, 0);
    assert_eq!(g.total.len(), g.ok);
    assert!(r.gateway_cpu_ns.is_some());
    // Bounded: never more than the request cap.
    assert!(g.completed() <= 2_000);
}

#[test]
fn times_each_token_of_a_stream() {
    let m = MockUpstream::start(MockConfig::default()).unwrap();
    let mut cfg = config(&m, r#"{"tokens":4,"interval_ms":20,"ttft_ms":30}"#);
    cfg.workload.stream_ratio = 1.0;
    cfg.connections = 2;
    let r = run(&cfg).unwrap();
    let g = &r.gateway;
    assert!(g.streams >= 2);
    // First token after ~30 ms, then ~20 ms between tokens; each token its own read.
    assert!(g.ttft.value_at_quantile(0.5) >= 29_000, "{}", g.ttft.value_at_quantile(0.5));
    let gap = g.gap.value_at_quantile(0.5);
    assert!((15_000..60_000).contains(&gap), "{gap}");
    assert_eq!(g.batched_reads, 0);
}

#[test]
fn open_loop_charges_queueing_to_the_server() {
    // The mock takes 50 ms per request; one connection; 40 requests/s asked.
    // It can serve 20/s, so requests queue and latency from the intended send
    // time grows far past 50 ms. A closed-loop tool would report ~50 ms.
    let m = MockUpstream::start(MockConfig::default()).unwrap();
    let mut cfg = config(&m, r#"{"delay_ms":50}"#);
    cfg.mode = Mode::Open { rate: 40.0 };
    cfg.connections = 1;
    cfg.warmup = Duration::ZERO;
    cfg.duration = Duration::from_millis(1500);
    let r = run(&cfg).unwrap();
    let p99 = r.gateway.total.value_at_quantile(0.99);
    assert!(p99 > 300_000, "p99 {p99} us does not show the queue");
    assert!(r.gateway.total.value_at_quantile(0.0) >= 50_000);
}

#[test]
fn baseline_runs_interleave_with_the_main_run() {
    let a = MockUpstream::start(MockConfig::default()).unwrap();
    let b = MockUpstream::start(MockConfig::default()).unwrap();
    let mut cfg = config(&a, r#"{"delay_ms":2}"#);
    cfg.baseline = Some(target(&b));
    let r = run(&cfg).unwrap();
    let base = r.baseline.unwrap();
    assert!(r.gateway.ok > 20 && base.ok > 20);
    assert!(r.gateway_secs > 0.1 && r.baseline_secs > 0.1);
    assert!(a.requests() >= r.gateway.ok && b.requests() >= base.ok);
}
