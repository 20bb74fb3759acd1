//! The alternatives the design card named, measured against what the data
//! plane does instead. Run: `cargo bench -p switchboard-benches --bench choices`.
//! The numbers and the conclusions are in docs/architecture.md ("Choices,
//! measured") and docs/performance.md.
//!
//! * `request_fields`: the data plane reads `model`, `stream`,
//!   `stream_options` and the checked fields in one borrowing pass
//!   (`request::scan`) and forwards the body untouched; simd-json parses the
//!   whole document and rewrites strings in place, so it needs a copy of the
//!   body first (the original bytes are what the upstream gets).
//! * `lookup`: a key (or a limit's bucket) is found in an immutable map
//!   published with the snapshot, or resolved once when the snapshot is
//!   compiled; dashmap takes a shard's read lock for every lookup.
//! * `counter`: each worker counts into its own slot; a shared dashmap of
//!   counters makes every worker write the same cache lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::Deserialize;
use simd_json::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_benches::chat_body;
use switchboard_dataplane::request;
use switchboard_shared::KeyHash;

/// The fields a full parse would have to produce to match what the scan reads.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: &'a str,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
}

fn request_fields(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_fields");
    for size in [1024usize, 10 * 1024, 100 * 1024] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("scan_borrowed_serde_json", size), &body, |b, body| {
            b.iter(|| request::scan(black_box(body)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("serde_json_value", size), &body, |b, body| {
            b.iter(|| {
                let v: serde_json::Value = serde_json::from_slice(black_box(body)).unwrap();
                v["model"].as_str().map(str::len)
            })
        });
        // The copy is reused (no allocation for it), as a worker's buffer would be.
        let mut copy = Vec::with_capacity(body.len());
        let mut buffers = simd_json::Buffers::new(body.len());
        g.bench_with_input(BenchmarkId::new("simd_json_borrowed_value_with_copy", size), &body, |b, body| {
            b.iter(|| {
                copy.clear();
                copy.extend_from_slice(black_box(body));
                let v = simd_json::to_borrowed_value_with_buffers(&mut copy, &mut buffers).unwrap();
                v.get("model").and_then(|m| m.as_str()).map(str::len)
            })
        });
        let mut copy = Vec::with_capacity(body.len());
        g.bench_with_input(BenchmarkId::new("simd_json_serde_fields_with_copy", size), &body, |b, body| {
            b.iter(|| {
                copy.clear();
                copy.extend_from_slice(black_box(body));
                let f: Fields<'_> = simd_json::serde::from_slice(&mut copy).unwrap();
                (f.model.len(), f.stream, f.temperature.is_some())
            })
        });
    }
    g.finish();
}

const KEYS: usize = 10_000;

fn hashes() -> Vec<KeyHash> {
    (0..KEYS).map(|k| KeyHash::of(format!("sk-bench-{k}").as_bytes())).collect()
}

/// Run `op` `iters` times on each of `threads` threads at once; the time per
/// round (every thread doing one op).
fn on_threads(threads: usize, iters: u64, op: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            s.spawn(move || {
                for i in 0..iters {
                    op(i.wrapping_mul(threads as u64).wrapping_add(t as u64));
                }
            });
        }
    });
    start.elapsed()
}

fn lookup(c: &mut Criterion) {
    let hashes = hashes();
    // The snapshot's map: immutable once published (readers take no lock).
    let snapshot: FxHashMap<KeyHash, usize> = hashes.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let dash: DashMap<KeyHash, usize, FxBuildHasher> = DashMap::with_hasher(FxBuildHasher);
    for (i, h) in hashes.iter().enumerate() {
        dash.insert(*h, i);
    }
    let mut g = c.benchmark_group("lookup");
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("key_snapshot_fxhashmap", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |i| {
                    black_box(snapshot.get(&hashes[i as usize % KEYS]));
                })
            })
        });
        g.bench_function(BenchmarkId::new("key_dashmap", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |i| {
                    black_box(dash.get(&hashes[i as usize % KEYS]).map(|r| *r));
                })
            })
        });
    }
    // A rate limit: the key's bucket resolved when the snapshot was compiled
    // (an `Arc` in the key's entry), or looked up by scope on each request.
    let resolved: Vec<Arc<AtomicU64>> = (0..KEYS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let scopes: Vec<String> = (0..KEYS).map(|k| format!("key:k{k}")).collect();
    let by_scope: DashMap<String, Arc<AtomicU64>, FxBuildHasher> = DashMap::with_hasher(FxBuildHasher);
    for (s, b) in scopes.iter().zip(&resolved) {
        by_scope.insert(s.clone(), b.clone());
    }
    let take = |b: &AtomicU64| {
        // One compare-and-swap, as GCRA's `take` does.
        let tat = b.load(Ordering::Acquire);
        let _ = b.compare_exchange_weak(tat, tat.wrapping_add(1), Ordering::AcqRel, Ordering::Acquire);
    };
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("limit_resolved_arc_cas", threads), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, |i| take(&resolved[i as usize % KEYS])))
        });
        g.bench_function(BenchmarkId::new("limit_dashmap_by_scope_cas", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |i| {
                    if let Some(bucket) = by_scope.get(scopes[i as usize % KEYS].as_str()) {
                        take(&bucket);
                    }
                })
            })
        });
    }
    g.finish();
}

/// One cache line per worker, as `metrics::WorkerSlot` keeps its atomics.
#[repr(align(128))]
#[derive(Default)]
struct Slot {
    requests: AtomicU64,
}

fn counter(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter");
    let slots: Vec<Slot> = (0..2).map(|_| Slot::default()).collect();
    let shared: DashMap<&'static str, AtomicU64, FxBuildHasher> = DashMap::with_hasher(FxBuildHasher);
    shared.insert("requests", AtomicU64::new(0));
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("per_worker_slot", threads), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for slot in slots.iter().take(threads) {
                        s.spawn(move || {
                            for _ in 0..iters {
                                slot.requests.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
        g.bench_function(BenchmarkId::new("shared_dashmap", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |_| {
                    if let Some(n) = shared.get("requests") {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(choices, request_fields, lookup, counter);
criterion_main!(choices);
