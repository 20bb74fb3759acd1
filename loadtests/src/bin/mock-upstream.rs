//! `mock-upstream`: the mock OpenAI upstream as a process, for the quickstart,
//! the Python SDK tests and load tests.

use clap::Parser;
use std::io::IsTerminal;
use std::net::SocketAddr;
use switchboard_loadtests::{Behaviour, MockConfig, MockUpstream};

#[derive(Parser)]
#[command(
    about = "A mock OpenAI-compatible upstream. Per-request behaviour: an `x-mock` header or a `mock` body field (JSON)."
)]
struct Args {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Completion tokens per reply.
    #[arg(long, default_value_t = 16)]
    tokens: u32,
    /// Text of one token (reply size = tokens x this).
    #[arg(long, default_value = "word ")]
    token_text: String,
    /// Delay before each response head, in ms.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Random extra delay, 0..=jitter, in ms.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Streaming: time to the first chunk, in ms.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Streaming: time between chunks, in ms.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Models listed by GET /v1/models (repeatable).
    #[arg(long = "model", default_values_t = vec!["mock-model".to_string(), "gpt-4o-mini".to_string()])]
    models: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Default behaviour for every request, as the `mock` body field's JSON
    /// (it wins over the flags above), e.g. '{"no_usage":true,"permissive":true}'
    /// for a server like llama-cpp-python. See docs/mock-upstream.md.
    #[arg(long, value_name = "JSON")]
    behaviour: Option<String>,
    /// Behave like llama-cpp-python's server (its default `interrupt_requests`):
    /// any request arriving ends every running stream with `data: [DONE]` and
    /// no finish_reason.
    #[arg(long)]
    interrupt_on_request: bool,
    /// Answer 404 `model_not_found` for a model not listed with --model.
    #[arg(long)]
    strict_models: bool,
}

fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => match (std::fs::read(c), std::fs::read(k)) {
            (Ok(c), Ok(k)) => Some((c, k)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("mock-upstream: cannot read the TLS files: {e}");
                std::process::exit(66);
            }
        },
        _ => None,
    };
    let flags = Behaviour {
        tokens: Some(args.tokens),
        delay_ms: Some(args.delay_ms),
        jitter_ms: Some(args.jitter_ms),
        ttft_ms: Some(args.ttft_ms),
        interval_ms: Some(args.interval_ms),
        ..Behaviour::default()
    };
    let behaviour = match args.behaviour.as_deref().map(serde_json::from_str::<Behaviour>) {
        None => flags,
        Some(Ok(b)) => b.over(&flags),
        Some(Err(e)) => {
            eprintln!("mock-upstream: --behaviour: {e}");
            std::process::exit(64);
        }
    };
    let cfg = MockConfig {
        listen: args.listen,
        workers: args.workers.max(1),
        behaviour,
        token_text: args.token_text,
        models: args.models,
        tls,
        record: false,
        reject_keys: Vec::new(),
        interrupt_on_request: args.interrupt_on_request,
        strict_models: args.strict_models,
    };
    match MockUpstream::start(cfg) {
        Ok(handle) => {
            println!("mock-upstream listening on {}", handle.base_url());
            // Serve until killed.
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("mock-upstream: cannot start: {e}");
            std::process::exit(71);
        }
    }
}
