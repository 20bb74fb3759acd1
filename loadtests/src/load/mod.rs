//! `switchboard-load`: an OpenAI-speaking load generator.
//!
//! Closed loop (fixed concurrency) or open loop (fixed rate, latency from the
//! intended send time, so a stalled server cannot hide its queue), optionally
//! interleaved with a baseline run straight at the upstream, with the
//! server's CPU time per request read from /proc.

pub mod client;
pub mod cpu;
pub mod hold;
pub mod report;
pub mod stats;
pub mod workload;

use client::{connect, exchange, Conn, Request, Target};
use stats::{Sample, Stats};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Rng, Workload};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each connection sends its next request when the previous one ends.
    Closed,
    /// Requests are scheduled at this many per second in total.
    Open { rate: f64 },
}

#[derive(Clone)]
pub struct LoadConfig {
    pub target: Target,
    pub baseline: Option<Target>,
    pub workload: Workload,
    pub mode: Mode,
    pub connections: usize,
    pub threads: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Hard bound on requests sent (warm-up included).
    pub max_requests: u64,
    /// Per-request limit.
    pub timeout: Duration,
    /// Baseline runs alternate with the gateway run in this many slices each.
    pub slices: u32,
    /// Gateway process, for CPU per request.
    pub pid: Option<u32>,
    /// Upstream process, for its CPU per request.
    pub upstream_pid: Option<u32>,
    pub progress: bool,
    pub seed: u64,
}

/// One measured run.
pub struct RunResult {
    pub gateway: Stats,
    pub baseline: Option<Stats>,
    /// Wall time spent in gateway and baseline phases.
    pub gateway_secs: f64,
    pub baseline_secs: f64,
    /// CPU of `pid` during gateway phases, and of `upstream_pid` during all phases.
    pub gateway_cpu_ns: Option<u64>,
    pub upstream_cpu_ns: Option<u64>,
}

// Phases, read by every connection before each request.
const STOP: u8 = 0;
const GATEWAY: u8 = 1;
const BASELINE: u8 = 2;
const WARMUP: u8 = 3;

struct Shared {
    phase: AtomicU8,
    issued: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
}

pub fn run(cfg: &LoadConfig) -> std::io::Result<RunResult> {
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        issued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    let start = Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::new();
    for t in 0..threads {
        let (cfg, shared) = (cfg.clone(), shared.clone());
        let conns: Vec<usize> = (0..cfg.connections).filter(|c| c % threads == t).collect();
        handles.push(std::thread::Builder::new().name(format!("load-{t}")).spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build();
            match rt {
                Ok(mut rt) => rt.block_on(thread_main(cfg, shared, conns, start)),
                Err(_) => [Stats::default(), Stats::default()],
            }
        })?);
    }
    let progress = Progress::new(cfg.progress && std::io::stderr().is_terminal());
    let sleep_until = |until: Instant, label: &str| {
        while Instant::now() < until && shared.phase.load(Ordering::SeqCst) != STOP {
            std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
            progress.show(label, &shared);
            if shared.issued.load(Ordering::SeqCst) >= cfg.max_requests {
                break;
            }
        }
    };
    sleep_until(start + cfg.warmup, "warm-up");
    let mut gateway_secs = 0.0;
    let mut baseline_secs = 0.0;
    let mut gateway_cpu = cfg.pid.map(|_| 0u64);
    let upstream_before = cfg.upstream_pid.and_then(cpu::cpu_ns);
    let slices = if cfg.baseline.is_some() { cfg.slices.max(1) } else { 1 };
    let slice = cfg.duration / slices;
    'outer: for _ in 0..slices {
        for (phase, label) in [(GATEWAY, "gateway"), (BASELINE, "baseline")] {
            if phase == BASELINE && cfg.baseline.is_none() {
                continue;
            }
            if shared.issued.load(Ordering::SeqCst) >= cfg.max_requests {
                break 'outer;
            }
            let cpu_before = cfg.pid.and_then(cpu::cpu_ns);
            let t0 = Instant::now();
            shared.phase.store(phase, Ordering::SeqCst);
            sleep_until(t0 + slice, label);
            let secs = t0.elapsed().as_secs_f64();
            if phase == GATEWAY {
                gateway_secs += secs;
                if let (Some(total), Some(b), Some(a)) =
                    (gateway_cpu.as_mut(), cpu_before, cfg.pid.and_then(cpu::cpu_ns))
                {
                    *total += a.saturating_sub(b);
                }
            } else {
                baseline_secs += secs;
            }
        }
    }
    shared.phase.store(STOP, Ordering::SeqCst);
    let upstream_cpu_ns = match (upstream_before, cfg.upstream_pid.and_then(cpu::cpu_ns)) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    progress.finish();
    let mut gateway = Stats::default();
    let mut baseline = Stats::default();
    for h in handles {
        let [g, b] = h.join().map_err(|_| std::io::Error::other("a load thread panicked"))?;
        gateway.merge(&g);
        baseline.merge(&b);
    }
    Ok(RunResult {
        gateway,
        baseline: cfg.baseline.as_ref().map(|_| baseline),
        gateway_secs,
        baseline_secs,
        gateway_cpu_ns: gateway_cpu,
        upstream_cpu_ns,
    })
}

async fn thread_main(cfg: LoadConfig, shared: Arc<Shared>, conns: Vec<usize>, start: Instant) -> [Stats; 2] {
    let stats = Rc::new(std::cell::RefCell::new([Stats::default(), Stats::default()]));
    let mut tasks = Vec::new();
    for c in conns {
        let (cfg, shared, stats) = (cfg.clone(), shared.clone(), stats.clone());
        tasks.push(monoio::spawn(async move { conn_main(cfg, shared, stats, c, start).await }));
    }
    for t in tasks {
        t.await;
    }
    let out = stats.borrow().clone();
    out
}

use std::rc::Rc;

async fn conn_main(
    cfg: LoadConfig,
    shared: Arc<Shared>,
    stats: Rc<std::cell::RefCell<[Stats; 2]>>,
    index: usize,
    start: Instant,
) {
    let mut rng = Rng::new(cfg.seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
    let mut conns: [Option<Conn>; 2] = [None, None];
    let mut sample = Sample::default();
    let period = match cfg.mode {
        Mode::Open { rate } => Some(Duration::from_secs_f64(cfg.connections as f64 / rate.max(0.001))),
        Mode::Closed => None,
    };
    let mut next = start + period.map_or(Duration::ZERO, |p| p.mul_f64(index as f64 / cfg.connections as f64));
    monoio::time::sleep_until(monoio::time::Instant::from_std(start)).await;
    loop {
        let phase = shared.phase.load(Ordering::SeqCst);
        if phase == STOP {
            break;
        }
        let seq = shared.issued.fetch_add(1, Ordering::SeqCst);
        if seq >= cfg.max_requests {
            break;
        }
        let intended = match period {
            Some(p) => {
                let at = next;
                next += p;
                if at > Instant::now() {
                    monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
                }
                at
            }
            None => Instant::now(),
        };
        // Warm-up touches both targets; measured phases one at a time.
        let slot = usize::from(phase == BASELINE || (phase == WARMUP && cfg.baseline.is_some() && seq % 2 == 1));
        let target = if slot == 1 { cfg.baseline.as_ref().unwrap_or(&cfg.target) } else { &cfg.target };
        let plan = cfg.workload.plan(seq, &mut rng);
        let key = cfg.workload.keys.get(plan.key_index).map_or("", String::as_str);
        let deadline = intended.max(Instant::now()) + cfg.timeout;
        sample.reset();
        if conns[slot].is_none() {
            match connect(target, deadline).await {
                Ok(c) => conns[slot] = Some(c),
                Err(kind) => sample.fail(kind),
            }
        }
        if let Some(conn) = conns[slot].as_mut() {
            let req = Request { path: &cfg.workload.path, key, plan: &plan, intended, deadline };
            if !exchange(conn, target, &req, &mut sample).await.keep {
                conns[slot] = None;
            }
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
        if sample.error.is_some() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        if phase == GATEWAY || phase == BASELINE {
            stats.borrow_mut()[slot].add(&sample);
        }
        if conns[slot].is_none() && sample.error.is_some() {
            // Do not spin on a refused or broken connection.
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct Progress {
    on: bool,
    started: Instant,
    last: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(on: bool) -> Progress {
        Progress { on, started: Instant::now(), last: std::cell::Cell::new(Instant::now()) }
    }

    fn show(&self, label: &str, shared: &Shared) {
        if !self.on || self.last.get().elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last.set(Instant::now());
        eprint!(
            "\r{:>6.1}s  {:<8}  {:>10} done  {:>8} errors ",
            self.started.elapsed().as_secs_f64(),
            label,
            shared.completed.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed)
        );
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}
