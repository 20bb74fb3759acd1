//! `switchboard-load`: load an OpenAI-compatible endpoint and report latency,
//! streaming timing, errors and the server's CPU per request.

use clap::Parser;
use serde_json::json;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchboard_loadtests::load::client::Target;
use switchboard_loadtests::load::workload::Workload;
use switchboard_loadtests::load::{report, run, LoadConfig, Mode, RunResult};
use switchboard_shared::url::BaseUrl;

#[derive(Parser, Clone)]
#[command(
    name = "switchboard-load",
    about = "Load an OpenAI-compatible endpoint: closed loop (--connections), open loop (--rate), or a sweep."
)]
struct Args {
    /// Base URL of the system under test, e.g. http://127.0.0.1:8080/v1
    #[arg(long)]
    url: String,
    /// Base URL of the upstream itself: the same workload runs against it,
    /// interleaved, and the report gives added latency (gateway - direct).
    #[arg(long)]
    baseline: Option<String>,
    /// Concurrent connections (closed loop), or connections carrying the open-loop rate.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Open loop: requests per second in total (latency counts from the scheduled send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Sweep these levels (connections; or rates with --rate) and report each.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// With --sweep: report the highest level whose p99 is under this.
    #[arg(long)]
    p99_target_ms: Option<f64>,
    /// Measured seconds (per level in a sweep).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before measuring (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Hard bound on requests sent per level, warm-up included.
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Load-generator threads (each its own runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Request path after the base URL.
    #[arg(long, default_value = "/chat/completions")]
    path: String,
    /// Approximate request body bytes (1024, 10240, 102400, ...).
    #[arg(long, default_value_t = 1024)]
    prompt_bytes: usize,
    /// Share of streaming requests, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    stream_ratio: f64,
    /// Do not ask for the usage chunk on streams.
    #[arg(long)]
    no_usage: bool,
    /// Share of requests sent with a mock fault (`"mock":{"status":500}`) that must fail.
    #[arg(long, default_value_t = 0.0)]
    fail_ratio: f64,
    /// API keys to spread requests over (repeatable).
    #[arg(long = "key", default_values_t = vec!["sk-switchboard-demo".to_string()])]
    keys: Vec<String>,
    /// Models to spread requests over (repeatable).
    #[arg(long = "model", default_values_t = vec!["gpt-4o-mini".to_string()])]
    models: Vec<String>,
    /// JSON object sent as the body's "mock" field, steering the mock upstream,
    /// e.g. '{"tokens":50,"interval_ms":20}'.
    #[arg(long)]
    mock: Option<String>,
    /// Repeat the same prompts (by default every prompt is unique, so no cache helps).
    #[arg(long)]
    repeat_prompts: bool,
    /// PID of the gateway: report its CPU microseconds per request (from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// PID of the upstream: report its CPU per request too.
    #[arg(long)]
    upstream_pid: Option<u32>,
    /// With --baseline: alternate gateway and direct in this many slices each.
    #[arg(long, default_value_t = 10)]
    slices: u32,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot here (latency by percentile; p99 by level for a sweep).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Extra PEM CA certificates to trust for https URLs.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Allow targets outside the loopback range.
    #[arg(long)]
    allow_remote: bool,
    /// Seed for the workload's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn target(label: &str, url: &str, args: &Args) -> Result<Target, String> {
    let u = BaseUrl::parse(url)?;
    let addr: SocketAddr = match u.ip() {
        Some(ip) => SocketAddr::new(ip, u.port),
        None => (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", u.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", u.host))?,
    };
    if !addr.ip().is_loopback() && !args.allow_remote {
        return Err(format!("{url} is not a loopback address; pass --allow-remote to load it anyway"));
    }
    let tls = if u.tls {
        let cfg = switchboard_dataplane::tls::client_config(args.ca_file.as_deref())?;
        let name = rustls::pki_types::ServerName::try_from(u.host.clone()).map_err(|e| e.to_string())?;
        Some((cfg, name))
    } else {
        None
    };
    Ok(Target { label: label.into(), addr, host_header: u.host_header(), path_prefix: u.path_prefix.clone(), tls })
}

fn config(args: &Args, connections: usize, rate: Option<f64>) -> Result<LoadConfig, String> {
    for (name, v) in [("--stream-ratio", args.stream_ratio), ("--fail-ratio", args.fail_ratio)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{name} must be between 0 and 1"));
        }
    }
    if !(0.0..=86_400.0).contains(&args.duration) || !(0.0..=3_600.0).contains(&args.warmup) {
        return Err("--duration must be at most a day and --warmup at most an hour".into());
    }
    if connections == 0 || connections > 100_000 {
        return Err("connections must be 1 to 100000".into());
    }
    if args.keys.is_empty() || args.models.is_empty() {
        return Err("need at least one --key and one --model".into());
    }
    if let Some(m) = &args.mock {
        let v: serde_json::Value = serde_json::from_str(m).map_err(|e| format!("--mock is not JSON: {e}"))?;
        if !v.is_object() {
            return Err("--mock must be a JSON object".into());
        }
    }
    Ok(LoadConfig {
        target: target("gateway", &args.url, args)?,
        baseline: args.baseline.as_deref().map(|b| target("direct", b, args)).transpose()?,
        workload: Workload {
            path: args.path.clone(),
            prompt_bytes: args.prompt_bytes,
            stream_ratio: args.stream_ratio,
            include_usage: !args.no_usage,
            fail_ratio: args.fail_ratio,
            keys: args.keys.clone(),
            models: args.models.clone(),
            mock: args.mock.clone(),
            unique: !args.repeat_prompts,
        },
        mode: match rate {
            Some(r) if r > 0.0 => Mode::Open { rate: r },
            Some(_) => return Err("--rate must be positive".into()),
            None => Mode::Closed,
        },
        connections,
        threads: args.threads.max(1),
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        max_requests: args.max_requests,
        timeout: Duration::from_secs_f64(args.timeout.max(0.001)),
        slices: args.slices,
        pid: args.pid,
        upstream_pid: args.upstream_pid,
        progress: !args.quiet,
        seed: args.seed,
    })
}

fn settings(args: &Args, cfg: &LoadConfig) -> serde_json::Value {
    json!({
        "url": args.url, "baseline": args.baseline, "connections": cfg.connections,
        "mode": match cfg.mode { Mode::Closed => "closed".to_string(), Mode::Open { rate } => format!("open {rate}/s") },
        "duration_s": args.duration, "warmup_s": args.warmup, "threads": cfg.threads,
        "prompt_bytes": args.prompt_bytes, "stream_ratio": args.stream_ratio, "fail_ratio": args.fail_ratio,
        "keys": args.keys.len(), "models": args.models, "mock": args.mock, "path": args.path,
    })
}

/// Configure and run one level; on failure, the exit code to leave with.
fn run_level(args: &Args, connections: usize, rate: Option<f64>) -> Result<(LoadConfig, RunResult), ExitCode> {
    let cfg = config(args, connections, rate).map_err(|e| {
        eprintln!("switchboard-load: {e}");
        ExitCode::from(64)
    })?;
    let r = run(&cfg).map_err(|e| {
        eprintln!("switchboard-load: {e}");
        ExitCode::from(70)
    })?;
    Ok((cfg, r))
}

fn raise_nofile() {
    let _ = switchboard_dataplane::server::raise_nofile_limit();
}

fn main() -> ExitCode {
    let args = Args::parse();
    raise_nofile();
    if args.sweep.is_empty() {
        let (cfg, r) = match run_level(&args, args.connections, args.rate) {
            Ok(x) => x,
            Err(code) => return code,
        };
        print!("{}", report::table(&r));
        let out = report::to_json(&r, settings(&args, &cfg));
        return write_outputs(&args, &out, Some(&r), None);
    }
    // Sweep.
    let by_rate = args.rate.is_some();
    let unit = if by_rate { "requests/s" } else { "connections" };
    let mut rows = Vec::new();
    let mut levels = Vec::new();
    let mut best = None;
    println!("{:>12}{:>12}{:>10}{:>10}{:>10}{:>10}{:>12}", unit, "req/s", "p50", "p99", "p99.9", "errors", "added p99");
    for level in &args.sweep {
        let (conns, rate) =
            if by_rate { (args.connections, Some(*level)) } else { (level.round().max(1.0) as usize, None) };
        let (cfg, r) = match run_level(&args, conns, rate) {
            Ok(x) => x,
            Err(code) => return code,
        };
        let g = &r.gateway.total;
        let p = |q: f64| (!g.is_empty()).then(|| g.value_at_quantile(q));
        let rps = if r.gateway_secs > 0.0 { r.gateway.completed() as f64 / r.gateway_secs } else { 0.0 };
        let added_p99 = r.baseline.as_ref().and_then(|b| report::added(g, &b.total)[2].1);
        println!(
            "{:>12}{:>12.0}{:>10}{:>10}{:>10}{:>10}{:>12}",
            level,
            rps,
            p(0.5).map_or("-".into(), |v| format!("{v}us")),
            p(0.99).map_or("-".into(), |v| format!("{v}us")),
            p(0.999).map_or("-".into(), |v| format!("{v}us")),
            r.gateway.error_count(),
            added_p99.map_or("-".into(), |v| format!("{v}us"))
        );
        if let (Some(target), Some(p99)) = (args.p99_target_ms, p(0.99)) {
            if (p99 as f64) <= target * 1000.0 && r.gateway.error_count() == 0 {
                best = Some(*level);
            }
        }
        levels.push(json!({"level": level, "result": report::to_json(&r, settings(&args, &cfg))}));
        rows.push((*level, p(0.99)));
    }
    if let Some(t) = args.p99_target_ms {
        match best {
            Some(b) => println!("highest {unit} with p99 under {t} ms and no errors: {b}"),
            None => println!("no level met p99 under {t} ms without errors"),
        }
    }
    let out = json!({"sweep": levels, "unit": unit, "p99_target_ms": args.p99_target_ms, "best": best});
    write_outputs(&args, &out, None, Some((&rows[..], unit)))
}

/// A sweep level and its p99 (us).
type SweepRow = (f64, Option<u64>);

fn write_outputs(
    args: &Args,
    out: &serde_json::Value,
    single: Option<&RunResult>,
    sweep: Option<(&[SweepRow], &str)>,
) -> ExitCode {
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(out).unwrap_or_default()) {
            eprintln!("switchboard-load: cannot write {}: {e}", path.display());
            return ExitCode::from(73);
        }
    }
    if let Some(path) = &args.svg {
        let svg = match (single, sweep) {
            (Some(r), _) => report::svg_percentiles(r),
            (None, Some((rows, unit))) => report::svg_sweep(rows, unit),
            _ => String::new(),
        };
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("switchboard-load: cannot write {}: {e}", path.display());
            return ExitCode::from(73);
        }
    }
    ExitCode::SUCCESS
}
