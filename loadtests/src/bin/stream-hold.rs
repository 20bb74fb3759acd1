//! `stream-hold`: hold N chat-completion streams open against an
//! OpenAI-compatible endpoint (reopening each as it ends), and report what a
//! window of them saw: token gaps, time to first token, events, errors, and
//! the CPU of named processes and cores over the window. The client of
//! `loadtests/stream-capacity.sh`; see docs/load-testing.md.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchboard_loadtests::load::hold::{run, to_json, HoldConfig, RequestTemplate};
use switchboard_shared::url::BaseUrl;

#[derive(Parser)]
#[command(name = "stream-hold", about = "Hold N streams open against an endpoint and measure a window of them.")]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:8080/v1 (plain HTTP, an IP address).
    #[arg(long)]
    url: String,
    /// Streams held open at once (1 to 100000).
    #[arg(long)]
    streams: usize,
    /// Content tokens per stream (the body's `mock.tokens`).
    #[arg(long, default_value_t = 300)]
    tokens: u32,
    /// Milliseconds between tokens (the body's `mock.interval_ms`).
    #[arg(long, default_value_t = 33)]
    interval_ms: u64,
    /// Streams started per second until all are open.
    #[arg(long, default_value_t = 2000.0)]
    ramp: f64,
    /// Seconds between the end of the ramp and the window.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// Seconds without an arrival after which a stream counts as stalled.
    #[arg(long, default_value_t = 5.0)]
    stall: f64,
    #[arg(long, default_value = "sk-switchboard-demo")]
    key: String,
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// A process to read the CPU time of over the window, NAME=PID (repeatable;
    /// this process is always read, as `client`).
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    /// A core to read the busy share of over the window (repeatable).
    #[arg(long = "cpu")]
    cpus: Vec<usize>,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Allow a target outside the loopback range.
    #[arg(long)]
    allow_remote: bool,
    /// Time each token's transit from the mock (the target must be our mock,
    /// directly or through proxies, on this machine): `transit_us` in the result.
    #[arg(long)]
    stamp: bool,
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|_| format!("not a process id: {pid}"))?;
    if name.is_empty() || name.len() > 64 {
        return Err("NAME must be 1 to 64 characters".into());
    }
    Ok((name.to_string(), pid))
}

fn config(a: &Args) -> Result<HoldConfig, String> {
    if !(1..=100_000).contains(&a.streams) {
        return Err("--streams must be 1 to 100000".into());
    }
    if !(1..=1_000_000).contains(&a.tokens) || a.interval_ms > 60_000 {
        return Err("--tokens must be 1 to 1000000 and --interval-ms at most 60000".into());
    }
    if !(a.ramp > 0.0 && a.ramp <= 1e6) {
        return Err("--ramp must be above 0 and at most 1000000 streams a second".into());
    }
    for (name, v) in [("--settle", a.settle), ("--window", a.window), ("--stall", a.stall)] {
        if !(0.0..=3600.0).contains(&v) {
            return Err(format!("{name} must be 0 to 3600 seconds"));
        }
    }
    if a.window <= 0.0 {
        return Err("--window must be above 0".into());
    }
    if a.key.is_empty() || a.key.len() > 512 || !a.key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("--key must be 1 to 512 printable characters without spaces".into());
    }
    if a.model.is_empty() || a.model.len() > 256 {
        return Err("--model must be 1 to 256 characters".into());
    }
    let u = BaseUrl::parse(&a.url)?;
    if u.tls {
        return Err("stream-hold speaks plain HTTP only".into());
    }
    let ip = u.ip().ok_or("the URL's host must be an IP address")?;
    if !ip.is_loopback() && !a.allow_remote {
        return Err(format!("{} is not a loopback address; pass --allow-remote to load it anyway", a.url));
    }
    let model = serde_json::to_string(&a.model).map_err(|e| e.to_string())?;
    let body_before = format!(
        r#"{{"model":{model},"stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"system","content":"You are a helpful assistant that answers briefly."}},{{"role":"user","content":"Tell a long story about a lighthouse keeper who finds a message in a bottle."}}],"mock":{{{}"interval_ms":{},"tokens":"#,
        if a.stamp { r#""stamp":true,"# } else { "" },
        a.interval_ms
    );
    let request = RequestTemplate {
        head: format!(
            "POST {}/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: ",
            u.path_prefix,
            u.host_header(),
            a.key
        ),
        body_before,
        body_after: "}}".to_string(),
    };
    Ok(HoldConfig {
        addr: SocketAddr::new(ip, u.port),
        request,
        streams: a.streams,
        tokens: a.tokens,
        ramp_per_sec: a.ramp,
        settle: Duration::from_secs_f64(a.settle),
        window: Duration::from_secs_f64(a.window),
        stall: Duration::from_secs_f64(a.stall),
        // This process too: the load side's own share of its core.
        pids: a.pids.iter().cloned().chain([("client".to_string(), std::process::id())]).collect(),
        cpus: a.cpus.clone(),
        stamp: a.stamp,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stream-hold: {e}");
            return ExitCode::from(64);
        }
    };
    // A socket per stream, and some to spare.
    let need = args.streams as u64 + 64;
    match switchboard_dataplane::server::raise_nofile_limit() {
        Ok(limit) if limit >= need => {}
        Ok(limit) => {
            eprintln!("stream-hold: {} streams need {need} open files; the limit is {limit}", args.streams);
            return ExitCode::from(75);
        }
        Err(e) => {
            eprintln!("stream-hold: cannot read the open-files limit: {e}");
            return ExitCode::from(71);
        }
    }
    let r = match run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stream-hold: {e}");
            return ExitCode::from(70);
        }
    };
    let out = to_json(&r, args.streams);
    let s = &r.stats;
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
    println!(
        "{} streams ({} open at the window's start, {} at its end, {} stalled): {} events, {} tokens in {:.1}s; gap p50 {} p99 {} max {} us; first token p99 {} us; {} batched reads; {} errors",
        args.streams,
        r.open_at_start,
        r.open_at_end,
        r.stalled,
        s.events,
        s.tokens,
        r.window.as_secs_f64(),
        q(&s.gap, 0.5),
        q(&s.gap, 0.99),
        s.gap.max(),
        q(&s.ttft, 0.99),
        s.batched_reads,
        s.errors.values().sum::<u64>()
    );
    if args.stamp {
        println!(
            "  token transit (mock write to client read) p50 {} p99 {} max {} us",
            q(&s.transit, 0.5),
            q(&s.transit, 0.99),
            s.transit.max()
        );
    }
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&out).unwrap_or_default()) {
            eprintln!("stream-hold: cannot write {}: {e}", path.display());
            return ExitCode::from(73);
        }
    }
    // Streams still open are abandoned: the process ends here.
    std::process::exit(0)
}
