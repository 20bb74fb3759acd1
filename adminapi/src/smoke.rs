//! The smoke check: prove a live deployment works, route by route, with the
//! smallest requests that prove each point (`POST /v1/admin/smoke`, and
//! `switchboard smoke`, which calls it).
//!
//! It sends real requests through a data plane with a test key (`test =
//! true`), using the data plane's own fault injection (`x-switchboard-fault`,
//! `x-switchboard-target-only`, `switchboard_dataplane::fault`), then reads
//! the usage records those requests left back from the database. Checks:
//!
//! 1. `targets`: each route, each target forced in turn, a whole and a
//!    streamed request: status, latency, time to first token, tokens, cost.
//! 2. `failover`: per route with 2+ targets, the first target failed by
//!    injection, whole and streamed: answered by another, no error.
//! 3. `costs`: the same prompt on every route and target, sorted by cost, as
//!    the usage records say.
//! 4. `cache`: on routes with a cache, the same prompt twice (miss, hit) and
//!    with `Cache-Control: no-cache` (bypass).
//! 5. `limits`: `x-ratelimit-*` headers present and consistent with the
//!    configured limits; with `burst`, a dedicated test key with a small
//!    request limit driven past it: exactly that many admitted, 429s after.
//!
//! Runs on the admin's runtime (tokio); database reads on blocking threads.

use crate::error::{ApiError, ApiResult};
use crate::SharedState;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::http::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_shared::config::{CacheMode, RoutingSpec, Trigger, NODE_TARGET_PREFIX};
use switchboard_shared::limits;
use switchboard_shared::url::BaseUrl;
use switchboard_shared::usage::nanos_to_usd;
use utoipa::ToSchema;

/// What to check, and how.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeInput {
    /// A client key marked `test = true` (its plaintext: the check sends requests with it).
    pub key: String,
    /// Routes to check; default every route the key may use.
    #[serde(default)]
    pub routes: Vec<String>,
    /// `max_tokens` of every request (1–16).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
    /// The prompt (default `Reply with OK.`); a run-unique tag is added for the cache check.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Routes that must have a response cache: one without is a failed check.
    #[serde(default)]
    pub expect_cache: Vec<String>,
    /// Drive `burst_key` past its request limit.
    #[serde(default)]
    pub burst: bool,
    /// A dedicated test key with a small request limit (its own, its org's,
    /// or its org's on the route), not used in the last minute.
    #[serde(default)]
    pub burst_key: Option<String>,
    /// List every request the check would send, and its worst-case tokens; send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The data plane to send through (`http://` or `https://`); default the
    /// in-process data plane of `switchboard serve`.
    #[serde(default)]
    pub dataplane_url: Option<String>,
    /// The wait for each answer, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The wait for the requests' usage records to reach the database, milliseconds.
    #[serde(default = "default_usage_wait_ms")]
    pub usage_wait_ms: u64,
}

fn default_max_tokens() -> u64 {
    1
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_usage_wait_ms() -> u64 {
    15_000
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    /// The check cannot be made (a route without a fallback): not passed.
    NotPossible,
    /// Nothing to check (a route without a cache that is not expected to
    /// have one, a burst not asked for).
    Skipped,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// `targets`, `failover`, `costs`, `cache`, `limits` or `burst`.
    pub check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub verdict: Verdict,
    pub detail: String,
}

/// One request the check sends (or, in a dry run, would send).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlannedRequest {
    /// Its `x-request-id` (the usage record carries it).
    pub request_id: String,
    pub check: String,
    pub route: String,
    /// The target forced (`x-switchboard-target-only`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_only: Option<String>,
    /// The fault injected (`x-switchboard-fault`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    pub stream: bool,
    pub max_tokens: u64,
    /// Prompt estimate plus `max_tokens`: the most it can use, per attempt.
    pub worst_case_tokens: u64,
    /// The key it is sent with (`key` or `burst_key`), by id.
    pub key_id: String,
}

/// What one request got, with its usage record's numbers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sent {
    pub request_id: String,
    pub route: String,
    pub stream: bool,
    /// The status the client got (0: no answer).
    pub status: u16,
    /// A `200` whose body ended cleanly (a stream with `[DONE]` and no error event).
    pub complete: bool,
    /// `x-switchboard-target`: what served it.
    pub served_by: Option<String>,
    pub attempts: Option<u32>,
    pub latency_ms: f64,
    /// Time to the first body bytes (for a stream, its first token).
    pub ttft_ms: Option<f64>,
    /// The error message, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From the usage record (absent until it is found).
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cost_nanos: Option<i64>,
    pub cost_usd: Option<f64>,
    /// The usage record says a failure was injected.
    pub injected: Option<bool>,
    /// `x-switchboard-cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(skip)]
    headers: Vec<(String, String)>,
}

/// One row of the cost table.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CostRow {
    pub route: String,
    pub target: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    pub cost_usd: f64,
}

/// The rate limits the check compared the headers with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LimitsSeen {
    /// The request limits (per minute) that apply to the key on some route checked.
    pub configured_rpm: Vec<u64>,
    pub configured_tpm: Vec<u64>,
    /// Spend and token caps that apply to the key (its own, its org's), as
    /// `key day max_usd 5` (no header shows them; listed to be read).
    pub quotas: Vec<String>,
    /// Answers whose `x-ratelimit-*` headers were checked.
    pub answers_checked: usize,
}

/// What the burst did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BurstRun {
    pub key_id: String,
    pub route: String,
    /// The request limit that applies (none: nothing limits the key).
    pub limit: Option<u64>,
    pub sent: usize,
    pub admitted: usize,
    pub refused_429: usize,
    /// Statuses in order.
    pub statuses: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SmokeReport {
    /// Every check passed (none failed or not possible).
    pub passed: bool,
    pub dry_run: bool,
    pub dataplane_url: String,
    pub key_id: String,
    pub org: String,
    pub checks: Vec<Check>,
    /// Every request, in order (planned, for a dry run).
    pub requests: Vec<PlannedRequest>,
    /// What each request got (empty for a dry run).
    pub results: Vec<Sent>,
    /// Check 3: cost of the same prompt per route and target, cheapest first.
    pub costs: Vec<CostRow>,
    pub limits: Option<LimitsSeen>,
    pub burst: Option<BurstRun>,
    /// Sum of the usage records of every request sent, nano-USD and USD.
    pub total_cost_nanos: i64,
    pub total_cost_usd: f64,
    /// Worst-case tokens of every request, summed.
    pub worst_case_tokens: u64,
}

/// A key as the check sees it.
struct KeyInfo {
    id: String,
    org: String,
    test: bool,
    enabled: bool,
    models: Vec<String>,
}

fn find_key_by_secret(state: &SharedState, secret: &str) -> ApiResult<Option<KeyInfo>> {
    let hash = state.hasher().hash_str(secret.as_bytes());
    state.read(|c| {
        use rusqlite::OptionalExtension;
        Ok(c.query_row(
            "SELECT k.id, o.name, k.test, k.enabled, k.models FROM api_keys k JOIN orgs o ON o.id = k.org_id \
             WHERE k.hash = ?1",
            [&hash],
            |r| {
                let models: String = r.get(4)?;
                Ok(KeyInfo {
                    id: r.get(0)?,
                    org: r.get(1)?,
                    test: r.get(2)?,
                    enabled: r.get(3)?,
                    models: serde_json::from_str(&models).unwrap_or_default(),
                })
            },
        )
        .optional()?)
    })
}

async fn key_info(state: &SharedState, field: &'static str, secret: &str) -> ApiResult<KeyInfo> {
    let (st, s) = (state.clone(), secret.to_string());
    let found = tokio::task::spawn_blocking(move || find_key_by_secret(&st, &s))
        .await
        .map_err(|_| ApiError::internal("the database task failed"))??;
    let k = found.ok_or_else(|| ApiError::invalid_field(field, format!("`{field}` is not a key of this gateway")))?;
    if !k.enabled {
        return Err(ApiError::invalid_field(field, format!("`{field}` ({}) is disabled", k.id)));
    }
    if !k.test {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` ({}) is not a test key: set `test = true` on it (it may then inject faults)", k.id),
        ));
    }
    Ok(k)
}

fn check_input(i: &SmokeInput) -> ApiResult<()> {
    let range = |field: &'static str, v: u64, r: limits::Range| {
        r.check(v).map_err(|m| ApiError::invalid_field(field, format!("`{field}` {m}")))
    };
    range("max_tokens", i.max_tokens, limits::SMOKE_MAX_TOKENS)?;
    range("timeout_ms", i.timeout_ms, limits::SMOKE_TIMEOUT_MS)?;
    range("usage_wait_ms", i.usage_wait_ms, limits::SMOKE_USAGE_WAIT_MS)?;
    if let Some(p) = &i.prompt {
        range("prompt", p.len() as u64, limits::SMOKE_PROMPT_BYTES)?;
    }
    for (field, list) in [("routes", &i.routes), ("expect_cache", &i.expect_cache)] {
        if list.len() > limits::SMOKE_MAX_ROUTES {
            return Err(ApiError::invalid_field(field, format!("at most {} routes", limits::SMOKE_MAX_ROUTES)));
        }
    }
    if i.burst && i.burst_key.is_none() {
        return Err(ApiError::invalid_field(
            "burst_key",
            "`burst` needs `burst_key`: a dedicated test key with a small request limit",
        ));
    }
    if !i.burst && i.burst_key.is_some() {
        return Err(ApiError::invalid_field("burst_key", "`burst_key` is only used with `burst: true`"));
    }
    if i.burst_key.is_some() && i.burst_key.as_deref() == Some(i.key.as_str()) {
        return Err(ApiError::invalid_field(
            "burst_key",
            "`burst_key` must not be `key`: the other checks spend its budget",
        ));
    }
    Ok(())
}

/// A route as the check sees it.
struct RoutePlan {
    name: String,
    /// Target names (upstreams, `node:NAME`), listed order, node pools expanded.
    targets: Vec<String>,
    /// The injected failure the route fails over on, if any.
    failover_fault: Option<&'static str>,
    cache: CacheMode,
    rpm: Vec<u64>,
    tpm: Vec<u64>,
}

fn plan_routes(spec: &RoutingSpec, key: &KeyInfo, input: &SmokeInput) -> ApiResult<Vec<RoutePlan>> {
    let may_use = |r: &str| key.models.iter().any(|m| m == "*" || m == r);
    for r in &input.routes {
        if !spec.models.iter().any(|m| &m.name == r) {
            return Err(ApiError::invalid_field("routes", format!("no route `{r}`")));
        }
        if !may_use(r) {
            return Err(ApiError::invalid_field("routes", format!("the key may not use route `{r}`")));
        }
    }
    let key_spec = spec.keys.iter().find(|k| k.id == key.id);
    let org_spec = spec.orgs.iter().find(|o| o.name == key.org);
    let mut out = Vec::new();
    for m in &spec.models {
        let wanted = if input.routes.is_empty() { may_use(&m.name) } else { input.routes.contains(&m.name) };
        if !wanted {
            continue;
        }
        let mut targets = Vec::new();
        for t in &m.targets {
            match &t.nodes {
                Some(pool) => {
                    for n in spec.nodes.iter().filter(|n| n.routable && (n.shared || n.org == key.org)) {
                        if n.models.iter().any(|x| &x.name == pool) {
                            targets.push(format!("{NODE_TARGET_PREFIX}{}", n.name));
                        }
                    }
                }
                None => targets.push(t.upstream.clone()),
            }
        }
        targets.dedup();
        let failover_fault = [
            (Trigger::Status5xx, "status=503"),
            (Trigger::Connect, "status=connect"),
            (Trigger::Reset, "status=reset"),
            (Trigger::Timeout, "status=timeout"),
        ]
        .into_iter()
        .find(|(t, _)| m.failover_on.contains(t))
        .map(|(_, f)| f)
        // One attempt in all: nothing can fail over.
        .filter(|_| m.retry.max_attempts != Some(1));
        let mut rpm = Vec::new();
        let mut tpm = Vec::new();
        let model_limits = org_spec.and_then(|o| o.models.iter().find(|x| x.model == m.name));
        for (r, t) in [
            (key_spec.and_then(|k| k.limits.rpm), key_spec.and_then(|k| k.limits.tpm)),
            (org_spec.and_then(|o| o.limits.rpm), org_spec.and_then(|o| o.limits.tpm)),
            (model_limits.and_then(|x| x.rpm), model_limits.and_then(|x| x.tpm)),
        ] {
            rpm.extend(r);
            tpm.extend(t);
        }
        out.push(RoutePlan { name: m.name.clone(), targets, failover_fault, cache: m.cache.mode, rpm, tpm });
    }
    if out.is_empty() {
        return Err(ApiError::invalid_field("routes", "the key may use no route: nothing to check"));
    }
    Ok(out)
}

/// The request body: one user message, `max_tokens`, temperature 0 (so a
/// `deterministic` cache takes it).
fn body(route: &str, prompt: &str, max_tokens: u64, stream: bool) -> Vec<u8> {
    let mut v = serde_json::json!({
        "model": route,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    if stream {
        v["stream"] = serde_json::Value::Bool(true);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// One request to make.
struct Job {
    plan: PlannedRequest,
    secret: Arc<str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

struct Builder<'a> {
    run: String,
    n: usize,
    input: &'a SmokeInput,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn job(
        &mut self,
        check: &str,
        route: &str,
        prompt: &str,
        stream: bool,
        only: Option<&str>,
        fault: Option<String>,
        (secret, key_id): (&Arc<str>, &str),
        extra: &[(&'static str, &str)],
    ) -> Job {
        self.n += 1;
        let request_id = format!("smoke-{}-{:03}", self.run, self.n);
        let body = body(route, prompt, self.input.max_tokens, stream);
        let worst_case_tokens =
            switchboard_dataplane::usage::scan::estimate_prompt(&body).saturating_add(self.input.max_tokens);
        let mut headers: Vec<(&'static str, String)> = vec![("x-request-id", request_id.clone())];
        if let Some(t) = only {
            headers.push(("x-switchboard-target-only", t.to_string()));
        }
        if let Some(f) = &fault {
            headers.push(("x-switchboard-fault", f.clone()));
        }
        headers.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        Job {
            plan: PlannedRequest {
                request_id,
                check: check.into(),
                route: route.into(),
                target_only: only.map(str::to_string),
                fault,
                stream,
                max_tokens: self.input.max_tokens,
                worst_case_tokens,
                key_id: key_id.into(),
            },
            secret: secret.clone(),
            body,
            headers,
        }
    }
}

/// Run the smoke check (or plan it, for a dry run) for the admin token `actor`.
pub async fn run(state: &SharedState, actor: &str, input: SmokeInput) -> ApiResult<SmokeReport> {
    check_input(&input)?;
    let url = match input.dataplane_url.as_deref().or(state.dataplane_url()) {
        Some(u) => u.to_string(),
        None => {
            return Err(ApiError::invalid_field(
                "dataplane_url",
                "this admin has no data plane in its process: name one with `dataplane_url`",
            ))
        }
    };
    let client = Client::new(&url, Duration::from_millis(input.timeout_ms))
        .map_err(|e| ApiError::invalid_field("dataplane_url", e))?;
    let key = key_info(state, "key", &input.key).await?;
    let burst_key = match &input.burst_key {
        Some(b) if input.burst => Some(key_info(state, "burst_key", b).await?),
        _ => None,
    };
    let spec = state.current().spec;
    let routes = plan_routes(&spec, &key, &input)?;
    for r in &input.expect_cache {
        if !routes.iter().any(|p| &p.name == r) {
            return Err(ApiError::invalid_field("expect_cache", format!("route `{r}` is not checked in this run")));
        }
    }
    let prompt = input.prompt.clone().unwrap_or_else(|| "Reply with OK.".to_string());
    let run_id = crate::db::random_hex(4);
    let mut b = Builder { run: run_id.clone(), n: 0, input: &input };
    let secret: Arc<str> = input.key.as_str().into();
    let k = (&secret, key.id.as_str());
    let no_store = [("cache-control", "no-store")];

    // Check 1: every target of every route, forced, whole and streamed.
    let mut jobs: Vec<Job> = Vec::new();
    for r in &routes {
        for t in &r.targets {
            for stream in [false, true] {
                jobs.push(b.job("targets", &r.name, &prompt, stream, Some(t), None, k, &no_store));
            }
        }
    }
    // Check 2: the first target failed by injection.
    for r in &routes {
        if r.targets.len() < 2 {
            continue;
        }
        let Some(kind) = r.failover_fault else { continue };
        for stream in [false, true] {
            let fault = format!("fail={},{kind}", r.targets[0]);
            jobs.push(b.job("failover", &r.name, &prompt, stream, None, Some(fault), k, &no_store));
        }
    }
    // Check 4: the cache — miss, hit, then bypass with `no-cache`.
    let cache_prompt = format!("{prompt} (smoke {run_id})");
    for r in routes.iter().filter(|r| r.cache != CacheMode::Off) {
        for extra in [&[][..], &[][..], &[("cache-control", "no-cache")][..]] {
            jobs.push(b.job("cache", &r.name, &cache_prompt, false, None, None, k, extra));
        }
    }
    // Check 5 (burst): the dedicated key past its request limit.
    let burst_secret: Option<Arc<str>> = input.burst_key.as_deref().map(Into::into);
    let mut burst_plan = None;
    if let (Some(bk), Some(bs)) = (&burst_key, &burst_secret) {
        // The first checked route the burst key may use.
        let route = routes.iter().find(|r| bk.models.iter().any(|m| m == "*" || *m == r.name));
        match route {
            None => burst_plan = Some(Err("the burst key may use none of the routes checked".to_string())),
            Some(r) => {
                let limit = burst_limit(&spec, bk, &r.name);
                match limit {
                    Some(l) if !limits::SMOKE_BURST_LIMIT.contains(l) => {
                        burst_plan = Some(Err(format!(
                            "the burst key's request limit is {l} per minute; the burst check drives a key \
                             with a limit of at most {} (use a dedicated key with a small one)",
                            limits::SMOKE_BURST_LIMIT.max
                        )))
                    }
                    Some(l) => {
                        for _ in 0..l + 2 {
                            jobs.push(b.job("burst", &r.name, &prompt, false, None, None, (bs, &bk.id), &no_store));
                        }
                        burst_plan = Some(Ok((r.name.clone(), l)));
                    }
                    None => {
                        // Nothing limits the key here: show that no limit holds.
                        for _ in 0..3 {
                            jobs.push(b.job("burst", &r.name, &prompt, false, None, None, (bs, &bk.id), &no_store));
                        }
                        burst_plan = Some(Ok((r.name.clone(), 0)));
                    }
                }
            }
        }
    }
    let planned: Vec<PlannedRequest> = jobs.iter().map(|j| j.plan.clone()).collect();
    let worst_case_tokens = planned.iter().fold(0u64, |a, p| a.saturating_add(p.worst_case_tokens));
    let mut report = SmokeReport {
        passed: false,
        dry_run: input.dry_run,
        dataplane_url: url.clone(),
        key_id: key.id.clone(),
        org: key.org.clone(),
        checks: Vec::new(),
        requests: planned,
        results: Vec::new(),
        costs: Vec::new(),
        limits: None,
        burst: None,
        total_cost_nanos: 0,
        total_cost_usd: 0.0,
        worst_case_tokens,
    };
    if input.dry_run {
        return Ok(report);
    }
    // Traffic with a test key, maybe past a rate limit: on the record.
    let change = serde_json::json!({
        "key": key.id,
        "burst_key": burst_key.as_ref().map(|k| k.id.clone()),
        "routes": routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        "requests": jobs.len(),
        "dataplane_url": url,
    });
    let (st, who, id) = (state.clone(), actor.to_string(), format!("smoke-{run_id}"));
    tokio::task::spawn_blocking(move || st.write(false, |c| crate::store::audit(c, &who, "run", "smoke", &id, change)))
        .await
        .map_err(|_| ApiError::internal("the database task failed"))??;

    // Send, in order (the cache's miss before its hit, the burst last).
    let mut results: Vec<Sent> = Vec::with_capacity(jobs.len());
    for j in &jobs {
        results.push(client.send(j).await);
    }
    // Read the usage records back.
    let ids: Vec<String> = results.iter().filter(|s| s.status != 0).map(|s| s.request_id.clone()).collect();
    let records = wait_for_records(state, &ids, Duration::from_millis(input.usage_wait_ms)).await?;
    for s in &mut results {
        if let Some(r) = records.iter().find(|r| r.request_id == s.request_id) {
            s.prompt_tokens = Some(r.prompt_tokens);
            s.completion_tokens = Some(r.completion_tokens);
            s.cost_nanos = Some(r.cost_nanos);
            s.cost_usd = Some(nanos_to_usd(r.cost_nanos));
            s.injected = Some(r.injected);
        }
    }
    let missing = ids.len().saturating_sub(records.len());
    report.total_cost_nanos = records.iter().fold(0i64, |a, r| a.saturating_add(r.cost_nanos));
    report.total_cost_usd = nanos_to_usd(report.total_cost_nanos);
    let res = |check: &str, route: &str| -> Vec<(usize, &Sent)> {
        results
            .iter()
            .enumerate()
            .filter(|(i, _)| jobs[*i].plan.check == check && jobs[*i].plan.route == route)
            .collect()
    };
    let mut checks = Vec::new();
    let line = |check: &str, route: Option<&str>, target: Option<&str>, verdict, detail: String| Check {
        check: check.into(),
        route: route.map(str::to_string),
        target: target.map(str::to_string),
        verdict,
        detail,
    };

    // 1. targets
    for r in &routes {
        for t in &r.targets {
            let got: Vec<&Sent> = res("targets", &r.name)
                .into_iter()
                .filter(|(i, _)| jobs[*i].plan.target_only.as_deref() == Some(t.as_str()))
                .map(|(_, s)| s)
                .collect();
            let bad: Vec<String> = got
                .iter()
                .filter_map(|s| {
                    let kind = if s.stream { "streamed" } else { "whole" };
                    if !s.complete {
                        Some(format!("{kind}: {}", failure(s)))
                    } else if s.served_by.as_deref() != Some(t.as_str()) {
                        Some(format!("{kind}: served by `{}`", s.served_by.as_deref().unwrap_or("?")))
                    } else {
                        None
                    }
                })
                .collect();
            let detail = if bad.is_empty() {
                got.iter()
                    .map(|s| {
                        format!(
                            "{} 200 in {:.0} ms{}, {} tokens, ${:.6}",
                            if s.stream { "streamed" } else { "whole" },
                            s.latency_ms,
                            s.ttft_ms
                                .filter(|_| s.stream)
                                .map(|t| format!(" (first token {t:.0} ms)"))
                                .unwrap_or_default(),
                            s.prompt_tokens.unwrap_or(0) + s.completion_tokens.unwrap_or(0),
                            s.cost_usd.unwrap_or(0.0)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                format!("target `{t}` failed: {}", bad.join("; "))
            };
            let v = if bad.is_empty() { Verdict::Passed } else { Verdict::Failed };
            checks.push(line("targets", Some(&r.name), Some(t), v, detail));
        }
        if r.targets.is_empty() {
            let detail = "the route has no target this key can reach (no node of its org is online)".to_string();
            checks.push(line("targets", Some(&r.name), None, Verdict::Failed, detail));
        }
    }

    // 2. failover
    for r in &routes {
        if r.targets.len() < 2 {
            let detail = format!(
                "not possible: the route has {} target{} and no fallback",
                r.targets.len(),
                if r.targets.len() == 1 { "" } else { "s" }
            );
            checks.push(line("failover", Some(&r.name), None, Verdict::NotPossible, detail));
            continue;
        }
        if r.failover_fault.is_none() {
            let detail =
                "not possible: the route makes one attempt (`retry.max_attempts` 1), or fails over on none of \
                          5xx, connect, reset, timeout"
                    .to_string();
            checks.push(line("failover", Some(&r.name), None, Verdict::NotPossible, detail));
            continue;
        }
        let first = &r.targets[0];
        let got = res("failover", &r.name);
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for (_, s) in &got {
            let kind = if s.stream { "streamed" } else { "whole" };
            let attempts = s.attempts.unwrap_or(0);
            if !s.complete {
                bad.push(format!("{kind}: {}", failure(s)));
            } else if s.served_by.as_deref() == Some(first.as_str()) {
                bad.push(format!("{kind}: served by the failed target `{first}`"));
            } else if attempts < 2 {
                // The failed target is tried first: one attempt means it never was.
                bad.push(format!(
                    "{kind}: served by `{}` in 1 attempt: `{first}` was not tried",
                    s.served_by.as_deref().unwrap_or("?")
                ));
            } else if s.injected != Some(true) {
                bad.push(format!("{kind}: the usage record is not marked injected"));
            } else {
                good.push(format!(
                    "{kind}: `{first}` failed, answered by `{}` in {attempts} attempts",
                    s.served_by.as_deref().unwrap_or("?")
                ));
            }
        }
        let (v, detail) =
            if bad.is_empty() { (Verdict::Passed, good.join("; ")) } else { (Verdict::Failed, bad.join("; ")) };
        checks.push(line("failover", Some(&r.name), Some(first), v, detail));
    }

    // 3. costs, from the usage records of check 1's whole requests.
    let mut costs = Vec::new();
    for (i, s) in results.iter().enumerate() {
        let j = &jobs[i].plan;
        if j.check != "targets" || j.stream || !s.complete {
            continue;
        }
        if let (Some(cost), Some(target)) = (s.cost_nanos, &j.target_only) {
            costs.push(CostRow {
                route: j.route.clone(),
                target: target.clone(),
                prompt_tokens: s.prompt_tokens.unwrap_or(0),
                completion_tokens: s.completion_tokens.unwrap_or(0),
                cost_nanos: cost,
                cost_usd: nanos_to_usd(cost),
            });
        }
    }
    costs.sort_by(|a, b| a.cost_nanos.cmp(&b.cost_nanos).then_with(|| a.route.cmp(&b.route)));
    let served = results.iter().enumerate().filter(|(i, s)| jobs[*i].plan.check == "targets" && s.complete).count();
    let (v, detail) = if missing > 0 {
        (
            Verdict::Failed,
            format!(
                "{missing} of {} requests have no usage record after {} ms: usage is not being accounted",
                ids.len(),
                input.usage_wait_ms
            ),
        )
    } else if costs.is_empty() {
        (Verdict::Failed, "no target answered: nothing to compare".to_string())
    } else {
        let free = costs.iter().filter(|c| c.cost_nanos == 0).count();
        let mut d = format!(
            "{} route/target pairs, read back from the usage records of {} answers; cheapest `{}` via `{}` ${:.6}, dearest `{}` via `{}` ${:.6}",
            costs.len(),
            served,
            costs[0].route,
            costs[0].target,
            costs[0].cost_usd,
            costs[costs.len() - 1].route,
            costs[costs.len() - 1].target,
            costs[costs.len() - 1].cost_usd
        );
        if free > 0 {
            d.push_str(&format!("; {free} without a price (cost 0)"));
        }
        (Verdict::Passed, d)
    };
    checks.push(line("costs", None, None, v, detail));

    // 4. cache
    for r in &routes {
        if r.cache == CacheMode::Off {
            let expected = input.expect_cache.contains(&r.name);
            let v = if expected { Verdict::Failed } else { Verdict::Skipped };
            let detail = if expected {
                "the route's cache is off, but it is expected to have one".to_string()
            } else {
                "the route has no cache (mode off)".to_string()
            };
            checks.push(line("cache", Some(&r.name), None, v, detail));
            continue;
        }
        let got: Vec<&Sent> = res("cache", &r.name).into_iter().map(|(_, s)| s).collect();
        let states: Vec<&str> = got.iter().map(|s| s.cache.as_deref().unwrap_or("none")).collect();
        let statuses: Vec<u16> = got.iter().map(|s| s.status).collect();
        let ok = statuses.iter().all(|s| *s == 200) && states == ["miss", "hit", "bypass"];
        let detail = format!(
            "mode {}: same prompt twice then `no-cache` → {} (expected miss, hit, bypass){}",
            match r.cache {
                CacheMode::Always => "always",
                _ => "deterministic",
            },
            states.join(", "),
            if statuses.iter().all(|s| *s == 200) { String::new() } else { format!("; statuses {statuses:?}") }
        );
        checks.push(line("cache", Some(&r.name), None, if ok { Verdict::Passed } else { Verdict::Failed }, detail));
    }

    // 5. limits: the headers of every answer of the test key.
    let mut bad = Vec::new();
    let mut checked = 0;
    let (mut all_rpm, mut all_tpm) = (Vec::new(), Vec::new());
    for r in &routes {
        all_rpm.extend(r.rpm.iter().copied());
        all_tpm.extend(r.tpm.iter().copied());
        for (i, s) in results.iter().enumerate() {
            let j = &jobs[i].plan;
            if j.route != r.name || j.check == "burst" || s.status == 0 {
                continue;
            }
            checked += 1;
            for (unit, configured) in [("requests", &r.rpm), ("tokens", &r.tpm)] {
                if let Some(problem) = header_problem(s, unit, configured) {
                    bad.push(format!("{}: {problem}", s.request_id));
                }
            }
        }
    }
    all_rpm.sort_unstable();
    all_rpm.dedup();
    all_tpm.sort_unstable();
    all_tpm.dedup();
    let (v, detail) = if !bad.is_empty() {
        bad.truncate(5);
        (Verdict::Failed, bad.join("; "))
    } else if all_rpm.is_empty() && all_tpm.is_empty() {
        (
            Verdict::Passed,
            format!("no rate limit applies to key `{}`; {checked} answers carry no x-ratelimit headers", key.id),
        )
    } else {
        (
            Verdict::Passed,
            format!(
                "{checked} answers carry x-ratelimit headers consistent with the configured limits (requests/min {all_rpm:?}, tokens/min {all_tpm:?})"
            ),
        )
    };
    checks.push(line("limits", None, None, v, detail));
    let mut quotas = Vec::new();
    let key_quotas =
        spec.keys.iter().filter(|k| k.id == key.id).flat_map(|k| k.limits.quotas.iter().map(|q| ("key", q)));
    let org_quotas =
        spec.orgs.iter().filter(|o| o.name == key.org).flat_map(|o| o.limits.quotas.iter().map(|q| ("org", q)));
    for (whose, q) in key_quotas.chain(org_quotas) {
        let period =
            serde_json::to_value(q.period).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        if let Some(usd) = q.max_usd {
            quotas.push(format!("{whose} {period} max_usd {usd}"));
        }
        if let Some(t) = q.max_tokens {
            quotas.push(format!("{whose} {period} max_tokens {t}"));
        }
    }
    if let (Some(last), false) = (checks.last_mut(), quotas.is_empty()) {
        last.detail.push_str(&format!("; quotas: {}", quotas.join(", ")));
    }
    report.limits =
        Some(LimitsSeen { configured_rpm: all_rpm, configured_tpm: all_tpm, quotas, answers_checked: checked });

    // 5b. burst
    match (&burst_plan, &burst_key) {
        (None, _) | (_, None) => {
            let detail = "not asked for (`--burst` with a dedicated `--burst-key`)".to_string();
            checks.push(line("burst", None, None, Verdict::Skipped, detail));
        }
        (Some(Err(why)), Some(_)) => checks.push(line("burst", None, None, Verdict::Failed, why.clone())),
        (Some(Ok((route, limit))), Some(bk)) => {
            let got: Vec<&Sent> = res("burst", route).into_iter().map(|(_, s)| s).collect();
            let statuses: Vec<u16> = got.iter().map(|s| s.status).collect();
            let admitted = statuses.iter().take_while(|s| **s == 200).count();
            let refused = statuses.iter().filter(|s| **s == 429).count();
            let (v, detail) = if *limit == 0 {
                (
                    Verdict::Failed,
                    format!(
                        "no request limit applies to key `{}` on route `{route}` (not its own, nor org `{}`'s): {admitted} of {} requests admitted, none refused",
                        bk.id,
                        bk.org,
                        statuses.len()
                    ),
                )
            } else {
                let l = *limit as usize;
                let exact = admitted == l && statuses[l..].iter().all(|s| *s == 429);
                if exact {
                    (
                        Verdict::Passed,
                        format!("limit {l}/min: {l} admitted, then {} refused with 429", statuses.len() - l),
                    )
                } else if admitted > l {
                    (
                        Verdict::Failed,
                        format!("limit {l}/min is not enforced: {admitted} admitted in a row (statuses {statuses:?})"),
                    )
                } else {
                    (
                        Verdict::Failed,
                        format!(
                            "limit {l}/min: {admitted} admitted before a refusal (statuses {statuses:?}); \
                             was the key used in the last minute, or does a tighter limit apply?"
                        ),
                    )
                }
            };
            report.burst = Some(BurstRun {
                key_id: bk.id.clone(),
                route: route.clone(),
                limit: (*limit > 0).then_some(*limit),
                sent: statuses.len(),
                admitted,
                refused_429: refused,
                statuses,
            });
            checks.push(line("burst", Some(route), None, v, detail));
        }
    }
    report.passed = checks.iter().all(|c| matches!(c.verdict, Verdict::Passed | Verdict::Skipped));
    report.checks = checks;
    report.costs = costs;
    report.results = results;
    Ok(report)
}

/// The tightest request limit that applies to a key on a route.
fn burst_limit(spec: &RoutingSpec, key: &KeyInfo, route: &str) -> Option<u64> {
    let k = spec.keys.iter().find(|k| k.id == key.id).and_then(|k| k.limits.rpm);
    let org = spec.orgs.iter().find(|o| o.name == key.org);
    let o = org.and_then(|o| o.limits.rpm);
    let m = org.and_then(|o| o.models.iter().find(|m| m.model == route)).and_then(|m| m.rpm);
    [k, o, m].into_iter().flatten().min()
}

/// What is wrong with an answer's `x-ratelimit-*-{unit}` headers, if anything.
fn header_problem(s: &Sent, unit: &str, configured: &[u64]) -> Option<String> {
    let get = |name: String| s.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str());
    let limit = get(format!("x-ratelimit-limit-{unit}"));
    let remaining = get(format!("x-ratelimit-remaining-{unit}"));
    if configured.is_empty() {
        return limit.map(|l| format!("x-ratelimit-limit-{unit}: {l}, but no {unit} limit is configured"));
    }
    let Some(limit) = limit else {
        return Some(format!("no x-ratelimit-limit-{unit} header, though limits {configured:?} apply"));
    };
    let Ok(l) = limit.trim().parse::<u64>() else {
        return Some(format!("x-ratelimit-limit-{unit} is not a number: {limit:?}"));
    };
    if !configured.contains(&l) {
        return Some(format!("x-ratelimit-limit-{unit}: {l}, not one of the configured limits {configured:?}"));
    }
    match remaining.map(|r| r.trim().parse::<u64>()) {
        Some(Ok(r)) if r <= l => None,
        Some(Ok(r)) => Some(format!("x-ratelimit-remaining-{unit}: {r} is above the limit {l}")),
        _ => Some(format!("x-ratelimit-remaining-{unit} missing or not a number")),
    }
}

fn failure(s: &Sent) -> String {
    match (s.status, &s.error) {
        (0, Some(e)) => format!("no answer ({e})"),
        (200, Some(e)) => format!("status 200, but {e}"),
        (st, Some(e)) => format!("status {st} ({e})"),
        (st, None) => format!("status {st}"),
    }
}

/// A usage record, as the check reads it back.
struct Record {
    request_id: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_nanos: i64,
    injected: bool,
}

/// Poll the request log until every request id has its record, or `wait` passes.
async fn wait_for_records(state: &SharedState, ids: &[String], wait: Duration) -> ApiResult<Vec<Record>> {
    let deadline = Instant::now() + wait;
    loop {
        let (st, list) = (state.clone(), ids.to_vec());
        let found = tokio::task::spawn_blocking(move || st.read(|c| records(c, &list)))
            .await
            .map_err(|_| ApiError::internal("the database task failed"))??;
        if found.len() >= ids.len() || Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn records(c: &crate::store::Db<'_>, ids: &[String]) -> ApiResult<Vec<Record>> {
    let mut st = c.prepare_cached(
        "SELECT request_id, MAX(CAST(prompt_tokens AS INTEGER), 0), MAX(CAST(completion_tokens AS INTEGER), 0), \
         MAX(CAST(cost_nanos AS INTEGER), 0), injected FROM request_log WHERE request_id = ?1",
    )?;
    let mut out = Vec::new();
    for id in ids {
        let rows = st.query_map([id], |r| {
            Ok(Record {
                request_id: r.get(0)?,
                prompt_tokens: r.get(1)?,
                completion_tokens: r.get(2)?,
                cost_nanos: r.get(3)?,
                injected: r.get(4)?,
            })
        })?;
        // One record per request id (the run's ids are unique).
        if let Some(r) = rows.into_iter().next() {
            out.push(r?);
        }
    }
    Ok(out)
}

/// The HTTP client to the data plane: one connection per request (HTTP/1.1,
/// TLS for `https://`).
struct Client {
    url: BaseUrl,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
}

/// The most of an answer's body kept (the rest is read and dropped).
const MAX_ANSWER_BYTES: usize = 1 << 20;

impl Client {
    fn new(url: &str, timeout: Duration) -> Result<Client, String> {
        let url = BaseUrl::parse(url).map_err(|e| format!("`dataplane_url`: {e}"))?;
        let tls = if url.tls {
            let cfg = switchboard_dataplane::tls::client_config(None)?;
            Some(tokio_rustls::TlsConnector::from(cfg))
        } else {
            None
        };
        Ok(Client { url, tls, timeout })
    }

    async fn send(&self, job: &Job) -> Sent {
        let mut s = Sent {
            request_id: job.plan.request_id.clone(),
            route: job.plan.route.clone(),
            stream: job.plan.stream,
            status: 0,
            complete: false,
            served_by: None,
            attempts: None,
            latency_ms: 0.0,
            ttft_ms: None,
            error: None,
            prompt_tokens: None,
            completion_tokens: None,
            cost_nanos: None,
            cost_usd: None,
            injected: None,
            cache: None,
            headers: Vec::new(),
        };
        let started = Instant::now();
        let r = tokio::time::timeout(self.timeout, self.exchange(job, started)).await;
        s.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, headers, body, first) = match r {
            Err(_) => {
                s.error = Some(format!("no complete answer within {} ms", self.timeout.as_millis()));
                return s;
            }
            Ok(Err(e)) => {
                s.error = Some(e);
                return s;
            }
            Ok(Ok(x)) => x,
        };
        s.status = status;
        s.ttft_ms = first.map(|d| d.as_secs_f64() * 1000.0);
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        s.served_by = h("x-switchboard-target");
        s.attempts = h("x-switchboard-attempts").and_then(|v| v.parse().ok());
        s.cache = h("x-switchboard-cache");
        s.headers = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-ratelimit-"))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        if status != 200 {
            s.error = Some(error_message(&body));
        } else if job.plan.stream && !stream_finished(&body) {
            s.error = Some(format!("the stream did not end cleanly: {}", error_message(&body)));
        } else {
            s.complete = true;
        }
        s
    }

    async fn exchange(
        &self,
        job: &Job,
        started: Instant,
    ) -> Result<(u16, HeaderMap, Vec<u8>, Option<Duration>), String> {
        let addr = self.url.host_header();
        let tcp = tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.over(TokioIo::new(tcp), job, started).await,
            Some(c) => {
                let name = rustls_pki_types::ServerName::try_from(self.url.host.clone())
                    .map_err(|e| format!("TLS name `{}`: {e}", self.url.host))?;
                let tls = c.connect(name, tcp).await.map_err(|e| format!("TLS to {addr}: {e}"))?;
                self.over(TokioIo::new(tls), job, started).await
            }
        }
    }

    async fn over<IO>(
        &self,
        io: IO,
        job: &Job,
        started: Instant,
    ) -> Result<(u16, HeaderMap, Vec<u8>, Option<Duration>), String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = chat_path(&self.url.path_prefix);
        let mut req = Request::post(path)
            .header("host", self.url.host_header())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", job.secret));
        for (k, v) in &job.headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(job.body.clone()))).map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let mut body = res.into_body();
        let mut out = Vec::new();
        let mut first = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
            if let Some(d) = frame.data_ref() {
                if !d.is_empty() && first.is_none() {
                    first = Some(started.elapsed());
                }
                let room = MAX_ANSWER_BYTES.saturating_sub(out.len());
                out.extend_from_slice(&d[..d.len().min(room)]);
            }
        }
        driver.abort();
        Ok((status, headers, out, first))
    }
}

/// The chat completions path under a data plane URL's path: `/v1/...` for a
/// bare host, the path's own `.../v1/...` when it names one (a gateway
/// behind a path-routing proxy).
fn chat_path(prefix: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.ends_with("/v1") {
        format!("{prefix}/chat/completions")
    } else {
        format!("{prefix}/v1/chat/completions")
    }
}

/// A stream that ended with `[DONE]` and no error event.
fn stream_finished(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("data: [DONE]") && !text.contains("\"error\"")
}

/// The `error.message` of an OpenAI-style error body (or of an SSE error
/// event), bounded; else the start of the body.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let json = text.lines().filter_map(|l| l.strip_prefix("data: ")).find(|l| l.contains("\"error\"")).unwrap_or(&text);
    let msg = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| json.trim().to_string());
    let mut m: String = msg.chars().take(200).collect();
    if msg.chars().count() > 200 {
        m.push_str("...");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_read_and_bounded() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Incorrect API key provided.","type":"x"}}"#),
            "Incorrect API key provided."
        );
        let sse = b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"cut\"}}\n\n";
        assert_eq!(error_message(sse), "cut");
        assert_eq!(error_message(&[b'a'; 500]).len(), 203);
        assert!(stream_finished(b"data: {}\n\ndata: [DONE]\n\n"));
        assert!(!stream_finished(b"data: {\"error\":{}}\n\ndata: [DONE]\n\n"));
    }

    #[test]
    fn chat_paths_follow_the_url() {
        assert_eq!(chat_path(""), "/v1/chat/completions");
        assert_eq!(chat_path("/v1"), "/v1/chat/completions");
        assert_eq!(chat_path("/gw/v1/"), "/gw/v1/chat/completions");
        assert_eq!(chat_path("/gw"), "/gw/v1/chat/completions");
    }

    #[test]
    fn inputs_are_range_checked() {
        let ok = || SmokeInput {
            key: "k".into(),
            routes: vec![],
            max_tokens: 1,
            prompt: None,
            expect_cache: vec![],
            burst: false,
            burst_key: None,
            dry_run: false,
            dataplane_url: None,
            timeout_ms: 1000,
            usage_wait_ms: 1000,
        };
        assert!(check_input(&ok()).is_ok());
        assert!(check_input(&SmokeInput { max_tokens: 0, ..ok() }).is_err());
        assert!(check_input(&SmokeInput { max_tokens: 17, ..ok() }).is_err());
        assert!(check_input(&SmokeInput { timeout_ms: 0, ..ok() }).is_err());
        assert!(check_input(&SmokeInput { prompt: Some(String::new()), ..ok() }).is_err());
        assert!(check_input(&SmokeInput { burst: true, ..ok() }).is_err());
        assert!(check_input(&SmokeInput { burst: true, burst_key: Some("k".into()), ..ok() }).is_err());
        assert!(check_input(&SmokeInput { burst_key: Some("b".into()), ..ok() }).is_err());
        assert!(check_input(&SmokeInput { burst: true, burst_key: Some("b".into()), ..ok() }).is_ok());
    }
}
