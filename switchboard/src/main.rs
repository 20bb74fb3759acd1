//! `switchboard`: the gateway binary. Thin on purpose: parse arguments, load
//! the config (exit 78 on a bad one), start, and stop cleanly on a signal.

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchboard_dataplane::dns::DnsCache;
use switchboard_dataplane::reload::Reloader;
use switchboard_shared::{Config, KeyHash};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits: cannot create (bind failed and the like).
const EX_CANTCREAT: u8 = 73;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A fast OpenAI-compatible LLM gateway.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a TOML config file. SIGHUP (or editing the file)
    /// reloads keys, upstreams and models; SIGTERM drains and exits.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit (0 = valid).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the `sha256:…` hash of an API key for the `[[keys]]` table. Reads
    /// the key from standard input when not given (keeps it out of shell history).
    HashKey { key: Option<String> },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("switchboard: cannot read the key from stdin: {e}");
                        return ExitCode::from(EX_CONFIG);
                    }
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if key.is_empty() {
                eprintln!("switchboard: the key is empty");
                return ExitCode::from(EX_CONFIG);
            }
            println!("{}", KeyHash::of(key.as_bytes()));
            ExitCode::SUCCESS
        }
        Command::Check { config } => {
            init_logging();
            match std::fs::read_to_string(&config).map_err(|e| e.to_string()).and_then(|t| {
                let cfg = Config::parse(&t).map_err(|e| e.to_string())?;
                switchboard_dataplane::snapshot::compile(&cfg.routing(), 1, &DnsCache::new()).map_err(|e| e.to_string())
            }) {
                Ok(s) => {
                    println!("{}: ok ({} keys, {} models)", config.display(), s.key_count(), s.routes.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Command::Serve { config } => {
            init_logging();
            serve(config)
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let dns = DnsCache::new();
    let (reloader, cfg) = match Reloader::load(path.clone(), dns.clone()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("switchboard: {}: {e}", path.display());
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(e) = dns.spawn_refresher(Duration::from_millis(cfg.server.dns_refresh_ms)) {
        eprintln!("switchboard: cannot start the DNS refresher: {e}");
        return ExitCode::from(EX_CANTCREAT);
    }
    if cfg.server.reload_poll_ms > 0 {
        if let Err(e) = reloader.spawn_watcher(Duration::from_millis(cfg.server.reload_poll_ms)) {
            eprintln!("switchboard: cannot start the config watcher: {e}");
            return ExitCode::from(EX_CANTCREAT);
        }
    }
    let mut signals = match signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard: cannot install signal handlers: {e}");
            return ExitCode::from(EX_CANTCREAT);
        }
    };
    let server = match switchboard_dataplane::start(cfg.server.clone(), reloader.store().clone(), dns) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard: cannot start the data plane on {}: {e}", cfg.server.listen);
            return ExitCode::from(EX_CANTCREAT);
        }
    };
    for signal in signals.forever() {
        match signal {
            SIGHUP => match reloader.reload_now() {
                Ok(v) => tracing::info!(version = v, "reloaded on SIGHUP"),
                Err(e) => tracing::error!(error = %e, "reload on SIGHUP failed; keeping the running snapshot"),
            },
            _ => {
                tracing::info!(grace_ms = cfg.server.shutdown_grace_ms, "shutting down: draining requests in flight");
                server.shutdown();
                tracing::info!("stopped");
                return ExitCode::SUCCESS;
            }
        }
    }
    ExitCode::SUCCESS
}
