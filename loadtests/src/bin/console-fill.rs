//! Fill an admin database's request log (and its rollups) with synthetic
//! usage, through the same accounting code the gateway uses
//! (`usage::write_batch`), for the console's load test
//! (`loadtests/console.sh`): N requests spread over the last D days, from a
//! few orgs, keys, models and targets, with errors and a spread of latencies.

use clap::Parser;
use switchboard_shared::usage::{Outcome, UsageRecord};

#[derive(Parser)]
#[command(about = "Fill a Switchboard admin database with synthetic request-log rows")]
struct Args {
    /// The SQLite database (created and migrated if missing).
    #[arg(long)]
    db: std::path::PathBuf,
    /// How many requests to account.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Spread over this many days before now.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
}

/// xorshift64*: a reproducible spread without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn main() {
    let args = Args::parse();
    if !(1..=100_000_000).contains(&args.rows)
        || !(1..=3650).contains(&args.days)
        || !(1..=100_000).contains(&args.batch)
    {
        eprintln!("console-fill: --rows 1..=1e8, --days 1..=3650, --batch 1..=100000");
        std::process::exit(64);
    }
    let mut conn = match switchboard_adminapi::db::open(&args.db) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("console-fill: cannot open {}: {e}", args.db.display());
            std::process::exit(73);
        }
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let span_ms = args.days * 86_400_000;
    let orgs = ["acme", "globex", "initech", "umbrella"];
    let models = ["gpt-4o-mini", "gpt-4o", "claude-3-haiku", "llama-3.1-8b", "fast"];
    let targets = ["openai", "azure", "anthropic", "node:gpu-1", "node:gpu-2", "groq"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = std::time::Instant::now();
    let mut done = 0u64;
    let mut batch = Vec::with_capacity(args.batch);
    while done < args.rows {
        batch.clear();
        let n = (args.rows - done).min(args.batch as u64);
        for i in 0..n {
            let seq = done + i;
            // Evenly over the span, oldest first (as a gateway writes them).
            let ts_ms = now_ms - span_ms + seq * span_ms / args.rows;
            let key = rng.below(40);
            let org = orgs[(key % orgs.len() as u64) as usize];
            let model = models[rng.below(models.len() as u64) as usize];
            let target = targets[rng.below(targets.len() as u64) as usize];
            let failed = rng.below(100) < 2;
            let prompt = 20 + rng.below(2_000);
            let completion = if failed { 0 } else { 1 + rng.below(800) };
            // Mostly 100 ms - 2 s, a tail to 20 s.
            let latency_us =
                if rng.below(100) == 0 { 2_000_000 + rng.below(18_000_000) } else { 100_000 + rng.below(1_900_000) };
            batch.push(UsageRecord {
                uid: format!("fill-{seq:012}"),
                ts_ms,
                request_id: format!("req-fill-{seq:012}"),
                org: org.to_string(),
                key_id: format!("key_fill{key:02}"),
                model: model.to_string(),
                route: model.to_string(),
                target: target.to_string(),
                upstream_model: model.to_string(),
                endpoint: "chat.completions".to_string(),
                stream: rng.below(2) == 0,
                status: if failed { 502 } else { 200 },
                outcome: if failed { Outcome::Error } else { Outcome::Ok },
                attempts: if failed { 2 } else { 1 },
                cache_hit: false,
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
                estimated: false,
                cost_nanos: prompt * 150 + completion * 600,
                latency_us,
                ttft_us: latency_us / 5,
                upstream_us: latency_us - 200,
                clamped: false,
                injected: false,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                session: String::new(),
            });
        }
        if let Err(e) = switchboard_adminapi::usage::write_batch(&mut conn, &batch) {
            eprintln!("console-fill: write failed: {e}");
            std::process::exit(74);
        }
        done += n;
        if done.is_multiple_of(100_000) || done == args.rows {
            eprintln!("console-fill: {done} rows ({:.1} s)", started.elapsed().as_secs_f64());
        }
    }
}
