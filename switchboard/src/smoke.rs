//! `switchboard smoke`: run the admin's smoke check (`POST /v1/admin/smoke`,
//! `switchboard_adminapi::smoke`) and print its report as a table, or as
//! JSON. Exit 0 only when every check passed; 1 when one did not; 64 for a
//! wrong invocation; 69 when the admin cannot be reached or refuses.

use crate::node::net;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchboard_adminapi::smoke::{SmokeInput, SmokeReport, Verdict};
use switchboard_shared::url::BaseUrl;

#[derive(Args)]
pub struct SmokeArgs {
    /// Base URL of the admin API, e.g. http://10.0.0.5:8081
    #[arg(long)]
    admin: String,
    /// An admin token (not read-only).
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// A client key marked `test = true`.
    #[arg(long, env = "SWITCHBOARD_SMOKE_KEY", hide_env_values = true)]
    key: String,
    /// A route to check (repeatable); default every route the key may use.
    #[arg(long = "route")]
    routes: Vec<String>,
    /// A route that must have a response cache (repeatable).
    #[arg(long = "expect-cache")]
    expect_cache: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also drive --burst-key past its request limit (asks first, unless --yes).
    #[arg(long)]
    burst: bool,
    /// A dedicated test key with a small request limit, for --burst.
    #[arg(long, env = "SWITCHBOARD_SMOKE_BURST_KEY", hide_env_values = true)]
    burst_key: Option<String>,
    /// Do not ask before the burst.
    #[arg(long)]
    yes: bool,
    /// List every request and its worst-case tokens; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// The data plane to send through (default: the admin's own, in `serve`).
    #[arg(long)]
    dataplane: Option<String>,
    /// `max_tokens` of every request (1–16).
    #[arg(long, default_value_t = 1)]
    max_tokens: u64,
    /// The prompt of every request.
    #[arg(long)]
    prompt: Option<String>,
    /// The wait for each answer, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// The wait for usage records to reach the database, milliseconds.
    #[arg(long, default_value_t = 15_000)]
    usage_wait_ms: u64,
    /// Extra PEM CA certificates to trust for an https admin URL.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;

pub fn run(a: SmokeArgs) -> ExitCode {
    let fail = |code: u8, m: String| {
        eprintln!("switchboard smoke: {m}");
        ExitCode::from(code)
    };
    let base = match BaseUrl::parse(&a.admin) {
        Ok(b) => b,
        Err(e) => return fail(EX_USAGE, format!("--admin: {e}")),
    };
    if a.burst && a.burst_key.is_none() {
        return fail(EX_USAGE, "--burst needs --burst-key: a dedicated test key with a small request limit".into());
    }
    let tls = match switchboard_dataplane::tls::client_config(a.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return fail(EX_USAGE, format!("--ca-file: {e}")),
    };
    let input = |dry_run: bool| SmokeInput {
        key: a.key.clone(),
        routes: a.routes.clone(),
        max_tokens: a.max_tokens,
        prompt: a.prompt.clone(),
        expect_cache: a.expect_cache.clone(),
        burst: a.burst,
        burst_key: a.burst_key.clone().filter(|_| a.burst),
        dry_run,
        dataplane_url: a.dataplane.clone(),
        timeout_ms: a.timeout_ms,
        usage_wait_ms: a.usage_wait_ms,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(EX_UNAVAILABLE, format!("cannot start a runtime: {e}")),
    };
    let call = |input: SmokeInput| -> Result<SmokeReport, (u8, String)> {
        let body = serde_json::to_vec(&input).map_err(|e| (EX_USAGE, e.to_string()))?;
        // The whole run: every request's wait, plus the usage wait, bounded.
        let budget = Duration::from_millis(a.timeout_ms.saturating_mul(200).saturating_add(a.usage_wait_ms))
            .min(Duration::from_secs(3600));
        let (status, bytes) = rt
            .block_on(net::call(
                &base,
                &tls,
                hyper::Method::POST,
                "/v1/admin/smoke",
                Some(&a.token),
                Some(body),
                budget,
            ))
            .map_err(|e| (EX_UNAVAILABLE, format!("{}: {e}", a.admin)))?;
        if status != 200 {
            let (_, message) = net::error_parts(&bytes);
            let code = if status == 422 || status == 400 { EX_USAGE } else { EX_UNAVAILABLE };
            return Err((code, format!("the admin answered {status}: {message}")));
        }
        serde_json::from_slice(&bytes).map_err(|e| (EX_UNAVAILABLE, format!("the admin's report does not parse: {e}")))
    };
    if a.burst && !a.yes && !a.dry_run {
        // Show what the burst sends, then ask.
        let plan = match call(input(true)) {
            Ok(p) => p,
            Err((code, m)) => return fail(code, m),
        };
        let n = plan.requests.iter().filter(|r| r.check == "burst").count();
        if !std::io::stdin().is_terminal() {
            return fail(EX_USAGE, format!("--burst sends {n} requests past a rate limit: confirm with --yes"));
        }
        eprint!("The burst check sends {n} requests with the burst key (past its limit). Continue? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || !matches!(answer.trim(), "y" | "Y" | "yes") {
            return fail(EX_USAGE, "not confirmed; nothing sent".into());
        }
    }
    let report = match call(input(a.dry_run)) {
        Ok(r) => r,
        Err((code, m)) => return fail(code, m),
    };
    if a.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(EX_UNAVAILABLE, e.to_string()),
        }
    } else {
        print!("{}", render(&report));
    }
    if report.dry_run || report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The report as text: the checklist, then the cost table.
pub fn render(r: &SmokeReport) -> String {
    let mut out = String::new();
    if r.dry_run {
        out.push_str(&format!(
            "Dry run: {} requests through {} with key {} (org {}), at most {} tokens in all\n\n",
            r.requests.len(),
            r.dataplane_url,
            r.key_id,
            r.org,
            r.worst_case_tokens
        ));
        out.push_str(&format!(
            "{:<22} {:<9} {:<20} {:<20} {:<6} {:>10}\n",
            "REQUEST", "CHECK", "ROUTE", "TARGET / FAULT", "STREAM", "MAX TOKENS"
        ));
        for q in &r.requests {
            let what = q.target_only.clone().or_else(|| q.fault.clone()).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<22} {:<9} {:<20} {:<20} {:<6} {:>10}\n",
                q.request_id,
                q.check,
                q.route,
                what,
                if q.stream { "yes" } else { "no" },
                q.worst_case_tokens
            ));
        }
        return out;
    }
    out.push_str(&format!(
        "Smoke check through {} with key {} (org {}): {}\n\n",
        r.dataplane_url,
        r.key_id,
        r.org,
        if r.passed { "PASSED" } else { "FAILED" }
    ));
    out.push_str(&format!("{:<13} {:<9} {:<20} {:<20} DETAIL\n", "VERDICT", "CHECK", "ROUTE", "TARGET"));
    for c in &r.checks {
        let verdict = match c.verdict {
            Verdict::Passed => "pass",
            Verdict::Failed => "FAIL",
            Verdict::NotPossible => "NOT POSSIBLE",
            Verdict::Skipped => "skip",
        };
        out.push_str(&format!(
            "{:<13} {:<9} {:<20} {:<20} {}\n",
            verdict,
            c.check,
            c.route.as_deref().unwrap_or("-"),
            c.target.as_deref().unwrap_or("-"),
            c.detail
        ));
    }
    if !r.costs.is_empty() {
        out.push_str(&format!(
            "\nCost of the same prompt, cheapest first (from the usage records)\n{:<20} {:<20} {:>8} {:>10} {:>12}\n",
            "ROUTE", "TARGET", "PROMPT", "COMPLETION", "COST USD"
        ));
        for c in &r.costs {
            out.push_str(&format!(
                "{:<20} {:<20} {:>8} {:>10} {:>12.6}\n",
                c.route, c.target, c.prompt_tokens, c.completion_tokens, c.cost_usd
            ));
        }
    }
    out.push_str(&format!("\n{} requests, total cost ${:.6}\n", r.results.len(), r.total_cost_usd));
    out
}
