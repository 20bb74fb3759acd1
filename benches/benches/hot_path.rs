//! The data plane's hot path, piece by piece. Run: `cargo bench -p switchboard-benches`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_benches::{chat_body, sdk_head};
use switchboard_dataplane::http::chunked::ChunkedDecoder;
use switchboard_dataplane::http::head::parse_request;
use switchboard_dataplane::snapshot::{compile, Prepare};
use switchboard_dataplane::{auth, request, route, select};
use switchboard_shared::config::Strategy;
use switchboard_shared::{Config, KeyHash, KeyHasher};

const KEY: &str = "sk-bench-0123456789abcdef0123456789abcdef";

fn snapshot(keys: usize, hasher: &KeyHasher) -> switchboard_dataplane::snapshot::Snapshot {
    let mut cfg = String::from(
        "[[upstreams]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"sk-up\"\n\
         [[upstreams]]\nname = \"b\"\nbase_url = \"http://127.0.0.1:10/v1\"\n",
    );
    for m in 0..50 {
        cfg.push_str(&format!(
            "[[models]]\nname = \"model-{m}\"\ntargets = [{{ upstream = \"a\" }}, {{ upstream = \"b\" }}]\n"
        ));
    }
    cfg.push_str("[[models]]\nname = \"gpt-4o-mini\"\ntargets = [{ upstream = \"a\" }, { upstream = \"b\" }]\n");
    for k in 0..keys {
        let key = if k == 0 { KEY.to_string() } else { format!("sk-other-{k}") };
        cfg.push_str(&format!("[[keys]]\nid = \"k{k}\"\nhash = \"{}\"\n", hasher.hash_str(key.as_bytes())));
    }
    compile(&Config::parse(&cfg).unwrap().routing(), 1, &Prepare::new(Default::default(), hasher.clone())).unwrap()
}

fn head_parse(c: &mut Criterion) {
    let head = sdk_head(KEY, 1024);
    let mut g = c.benchmark_group("http_head_parse");
    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("sdk_request_head", |b| b.iter(|| parse_request(black_box(&head), 96).unwrap()));
    g.finish();
}

fn body_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("body_field_scan");
    for size in [1024usize, 10 * 1024, 100 * 1024] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| request::scan(black_box(body)).unwrap())
        });
    }
    g.finish();
}

fn key_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_lookup");
    let head = sdk_head(KEY, 1024);
    let cred = parse_request(&head, 96).unwrap().credential;
    // What a request pays: hash the bearer token, then one map lookup.
    for (name, hasher) in [
        ("sha256_plus_lookup_10k_keys", KeyHasher::unkeyed()),
        ("hmac_sha256_plus_lookup_10k_keys", KeyHasher::keyed(b"bench-server-hash-key-0123456789").unwrap()),
    ] {
        let snap = snapshot(10_000, &hasher);
        g.bench_function(name, |b| b.iter(|| auth::authenticate(&snap, &cred, black_box(&head)).unwrap().id.len()));
    }
    let snap = snapshot(10_000, &KeyHasher::unkeyed());
    let hash = KeyHash::of(KEY.as_bytes());
    g.bench_function("lookup_only_10k_keys", |b| b.iter(|| snap.key(black_box(&hash)).is_some()));
    g.finish();
}

fn route_pick(c: &mut Criterion) {
    let snap = snapshot(1, &KeyHasher::unkeyed());
    let key = snap.key(&KeyHash::of(KEY.as_bytes())).unwrap();
    let mut g = c.benchmark_group("route_pick");
    for strategy in [
        Strategy::Priority,
        Strategy::Weighted,
        Strategy::RoundRobin,
        Strategy::LeastLatency,
        Strategy::Cheapest,
        Strategy::LeastBusy,
    ] {
        g.bench_function(format!("{strategy:?}_51_routes_2_targets"), |b| {
            b.iter(|| {
                let r = route::resolve(&snap, key, black_box("gpt-4o-mini")).unwrap();
                select::plan(r, strategy, 1, "default").nth(0)
            })
        });
    }
    g.finish();
}

fn sse_relay_decode(c: &mut Criterion) {
    // An upstream stream: 100 token events in chunked framing, as the relay decodes it.
    let mut framed = Vec::new();
    let event = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}

"#;
    for _ in 0..100 {
        framed.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        framed.extend_from_slice(event);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Bytes(framed.len() as u64));
    g.bench_function("chunked_decode_100_sse_events", |b| {
        let mut buf = framed.clone();
        b.iter(|| {
            buf.copy_from_slice(&framed);
            let mut d = ChunkedDecoder::new();
            let (mut r, mut w) = (0, 0);
            let end = buf.len();
            d.decode(&mut buf, &mut r, end, &mut w).unwrap();
            w
        })
    });
    g.finish();
}

fn usage(c: &mut Criterion) {
    use switchboard_dataplane::usage::scan::{UsageScan, UsageStrip};
    let event = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}

"#;
    let mut stream = Vec::new();
    for _ in 0..100 {
        stream.extend_from_slice(event);
    }
    stream.extend_from_slice(
        br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112}}

data: [DONE]

"#,
    );
    let whole = format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}}}"#,
        "word ".repeat(200)
    );
    let mut g = c.benchmark_group("usage");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("scan_100_sse_events_in_4k_reads", |b| {
        b.iter(|| {
            let mut s = UsageScan::default();
            for part in black_box(&stream).chunks(4096) {
                s.feed(part);
            }
            s.total_tokens
        })
    });
    g.bench_function("strip_usage_chunk_100_sse_events_one_read_each", |b| {
        let mut out = Vec::with_capacity(stream.len());
        b.iter(|| {
            out.clear();
            let mut f = UsageStrip::default();
            for ev in black_box(&stream).split_inclusive(|&b| b == b'\n') {
                f.filter(ev, &mut out);
            }
            f.finish(&mut out);
            out.len()
        })
    });
    g.throughput(Throughput::Bytes(whole.len() as u64));
    g.bench_function("scan_1k_chat_completion", |b| {
        b.iter(|| {
            let mut s = UsageScan::default();
            s.feed(black_box(whole.as_bytes()));
            s.total_tokens
        })
    });
    g.throughput(Throughput::Elements(1));
    let rec = switchboard_shared::usage::UsageRecord {
        uid: "0123456789abcdef0123456789abcdef".into(),
        ts_ms: 1_795_305_600_000,
        request_id: "fedcba9876543210fedcba9876543210".into(),
        org: "acme".into(),
        key_id: "key_3f9a0c1d2e4b".into(),
        model: "gpt-4o-mini".into(),
        route: "gpt-4o-mini".into(),
        target: "openai".into(),
        upstream_model: "gpt-4o-mini".into(),
        endpoint: "chat.completions".into(),
        stream: true,
        status: 200,
        outcome: switchboard_shared::usage::Outcome::Ok,
        attempts: 1,
        cache_hit: false,
        prompt_tokens: 12,
        completion_tokens: 100,
        total_tokens: 112,
        estimated: false,
        cost_nanos: 61_800,
        latency_us: 812_000,
        ttft_us: 190_000,
        upstream_us: 811_500,
        clamped: false,
        injected: false,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        session: String::new(),
    };
    let metrics = switchboard_dataplane::metrics::Metrics::new(1, None);
    g.bench_function("record_build_and_count_in_metrics", |b| {
        b.iter(|| {
            let r = black_box(&rec).clone();
            metrics.slots[0].request(&r);
            r
        })
    });
    g.finish();
}

criterion_group!(benches, head_parse, body_scan, key_lookup, route_pick, sse_relay_decode, usage);
criterion_main!(benches);
