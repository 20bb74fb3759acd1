//! The configuration's parsing and validation.

use super::*;
use crate::KeyHash;

fn sample() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:9000/v1"
api_key = "sk-upstream-123456789"

[[models]]
name = "gpt-4o-mini"
targets = [{{ upstream = "mock" }}]

[[models]]
name = "fast"
targets = [{{ upstream = "mock", model = "gpt-4o-mini" }}]

[[keys]]
id = "team-a"
hash = "{}"
models = ["fast"]
"#,
        KeyHash::of(b"sk-a")
    )
}

#[test]
fn parses_a_full_config_with_defaults() {
    let cfg = Config::parse(&sample()).unwrap();
    assert_eq!(cfg.server.workers, 2);
    assert_eq!(cfg.server.max_header_bytes, 16 * 1024);
    assert_eq!(cfg.server.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(cfg.keys[0].org, "default");
    assert_eq!(cfg.upstreams[0].connect_timeout_ms, 5_000);
    assert_eq!(cfg.models[1].targets[0].model.as_deref(), Some("gpt-4o-mini"));
}

#[test]
fn unknown_fields_are_errors_that_name_the_key() {
    let err = Config::parse("[server]\nlisten_addr = \"x\"\n").unwrap_err();
    assert!(err.to_string().contains("listen_addr"), "{err}");
    let err = Config::parse(&sample().replace("api_key =", "apikey =")).unwrap_err();
    assert!(err.to_string().contains("apikey"), "{err}");
}

#[test]
fn cross_references_are_checked_with_paths() {
    let err = Config::parse(&sample().replace("{ upstream = \"mock\" }", "{ upstream = \"nope\" }")).unwrap_err();
    assert_eq!(err.path, "models[0].targets[0].upstream");
    let err = Config::parse(&sample().replace("models = [\"fast\"]", "models = [\"slow\"]")).unwrap_err();
    assert_eq!(err.path, "keys[0].models[0]");
    let err = Config::parse(&sample().replace("127.0.0.1:9000/v1", "127.0.0.1:9000/v1?x")).unwrap_err();
    assert_eq!(err.path, "upstreams[0].base_url");
    let err = Config::parse(&sample().replace("listen = \"127.0.0.1:0\"", "listen = \"nowhere\"")).unwrap_err();
    assert_eq!(err.path, "server.listen");
}

#[test]
fn names_follow_the_admin_apis_rules_and_a_key_names_some_model() {
    // TOML escapes: U+202E (bidi override), U+200B (zero width), NUL.
    for bad in [r"fa\u202Est", r"fa\u200Bst", r"fa\u0000st"] {
        let cfg = sample().replacen("name = \"fast\"", &format!("name = \"{bad}\""), 1);
        assert_ne!(cfg, sample());
        assert_eq!(Config::parse(&cfg).unwrap_err().path, "models[1].name", "{bad:?}");
    }
    let cfg = sample().replacen("models = [\"fast\"]", "models = []", 1);
    assert_ne!(cfg, sample());
    assert_eq!(Config::parse(&cfg).unwrap_err().path, "keys[0].models");
}

#[test]
fn a_routes_weights_add_up_to_at_most_10000_whatever_its_strategy() {
    let heavy = "{ upstream = \"mock\", weight = 6000 }, { upstream = \"mock\", weight = 6000 }]";
    let cfg = sample().replacen("{ upstream = \"mock\" }]", heavy, 1);
    assert_ne!(cfg, sample());
    assert_eq!(Config::parse(&cfg).unwrap_err().path, "models[0].targets");
}

#[test]
fn duplicates_and_reserved_headers_are_refused() {
    let dup = sample().replace("name = \"fast\"", "name = \"gpt-4o-mini\"");
    assert_eq!(Config::parse(&dup).unwrap_err().path, "models[1].name");
    let hdr = sample().replace("api_key = ", "headers = { Authorization = \"x\" }\napi_key = ");
    assert_eq!(Config::parse(&hdr).unwrap_err().path, "upstreams[0].headers");
    let zero = sample().replace("workers = 2", "workers = 2\nmax_body_bytes = 0");
    assert_eq!(Config::parse(&zero).unwrap_err().path, "server.max_body_bytes");
}

#[test]
fn node_pool_targets_are_checked() {
    let pool = sample()
        .replace("{ upstream = \"mock\" }]", "{ nodes = \"llama\", prompt_per_mtok = 0.0 }, { upstream = \"mock\" }]");
    let cfg = Config::parse(&pool).unwrap();
    assert_eq!(cfg.models[0].targets[0].nodes.as_deref(), Some("llama"));
    let both = sample().replace("{ upstream = \"mock\" }]", "{ upstream = \"mock\", nodes = \"llama\" }]");
    assert_eq!(Config::parse(&both).unwrap_err().path, "models[0].targets[0]");
    let renamed = sample().replace("{ upstream = \"mock\" }]", "{ nodes = \"llama\", model = \"x\" }]");
    assert_eq!(Config::parse(&renamed).unwrap_err().path, "models[0].targets[0].model");
    let price = sample().replace("{ upstream = \"mock\" }]", "{ nodes = \"llama\", prompt_per_mtok = -1.0 }]");
    assert_eq!(Config::parse(&price).unwrap_err().path, "models[0].targets[0].prompt_per_mtok");
    let reserved = sample().replace("name = \"mock\"", "name = \"node:mock\"");
    assert_eq!(Config::parse(&reserved).unwrap_err().path, "upstreams[0].name");
}

#[test]
fn ranges_are_checked_for_the_file_as_for_the_api() {
    let huge = sample().replace("api_key =", "connect_timeout_ms = 18446744073709551615\napi_key =");
    let err = Config::parse(&huge).unwrap_err();
    assert_eq!(err.path, "upstreams[0].connect_timeout_ms", "{err}");
    assert!(err.message.contains("3600000"), "{err}");
    let retention = sample().replace("[server]", "[usage]\nretention_days = 18446744073709551615\n\n[server]");
    assert_eq!(Config::parse(&retention).unwrap_err().path, "usage.retention_days");
    let price = sample().replace("api_key =", "prices = [{ model = \"m\", prompt_per_mtok = 1e13 }]\napi_key =");
    assert_eq!(Config::parse(&price).unwrap_err().path, "upstreams[0].prices[0].prompt_per_mtok");
    let long = format!("x{}", "y".repeat(900_000));
    let e = check_node_model(&long).unwrap_err();
    assert!(e.len() < 400, "a huge name is not echoed whole: {} bytes", e.len());
}

#[test]
fn stored_absurd_values_are_clamped_into_range_so_they_can_be_served() {
    let mut spec = Config::parse(&sample()).unwrap().routing();
    spec.upstreams[0].connect_timeout_ms = u64::MAX;
    spec.upstreams[0].prices.push(PriceSpec {
        cache_read_per_mtok: None,
        cache_write_per_mtok: None,
        model: "x".into(),
        prompt_per_mtok: 1e308,
        completion_per_mtok: f64::NAN,
    });
    assert!(spec.validate().is_err());
    let changed = spec.clamp_to_ranges();
    assert_eq!(changed, ["upstreams[0].connect_timeout_ms", "upstreams[0].prices[0]"]);
    spec.validate().unwrap();
    assert!(spec.clamp_to_ranges().is_empty());
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let cfg = Config::parse(&sample()).unwrap();
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("sk-upstream-123456789"));
    assert!(dbg.contains("...6789"));
}

/// The limits block is one type, flattened: the TOML stays flat, unknown
/// fields beside it are still refused, and a bad value names its field.
#[test]
fn the_limits_block_is_flat_in_toml_and_refuses_unknown_fields() {
    let key = "[[keys]]\nid = \"team-a\"\nhash = \"";
    let with = |extra: &str| sample().replacen(key, &format!("[[orgs]]\nname = \"acme\"\n{extra}\n\n{key}"), 1);
    let text = sample().replace("models = [\"fast\"]", "models = [\"fast\"]\nrpm = 60\ntpm = 1000\n")
        + "\n[[keys.quotas]]\nperiod = \"day\"\nmax_tokens = 5000\n";
    let cfg = Config::parse(&text).unwrap();
    let limits = &cfg.keys[0].limits;
    assert_eq!((limits.rpm, limits.tpm), (Some(60), Some(1000)));
    assert_eq!(limits.quotas, [QuotaSpec { period: Period::Day, max_usd: None, max_tokens: Some(5000) }]);
    // Written back, it is the same flat table.
    let written = toml::to_string(&cfg).unwrap();
    assert!(written.contains("rpm = 60\ntpm = 1000"), "{written}");
    assert!(!written.contains("limits"), "{written}");
    let reread = Config::parse(&written).unwrap();
    assert_eq!(Config { deprecations: Vec::new(), ..reread }, Config { deprecations: Vec::new(), ..cfg });

    let cfg = Config::parse(&with("rpm = 5\n[[orgs.models]]\nmodel = \"fast\"\nrpm = 2")).unwrap();
    assert_eq!((cfg.orgs[0].limits.rpm, cfg.orgs[0].models[0].rpm), (Some(5), Some(2)));

    for (bad, named) in [
        (text.replace("rpm = 60", "rpmm = 60"), "unknown field `rpmm`"),
        (text.replace("max_tokens = 5000", "max_tokenz = 5000"), "unknown field `max_tokenz`"),
        (text.replace("rpm = 60", "rpm = \"60\""), "rpm: invalid type"),
        (text.replace("tpm = 1000", "tpm = -1"), "tpm: invalid value"),
        (text.replace("period = \"day\"", "period = \"week\""), "quotas: unknown variant `week`"),
        (with("rpm = 5\nburst = 3"), "unknown field `burst`"),
        (with("tpm = true"), "tpm: invalid type"),
    ] {
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(err.contains(named), "{named}: {err}");
    }
    // Ranges are checked on the block, with the path.
    let err = Config::parse(&text.replace("rpm = 60", "rpm = 0")).unwrap_err();
    assert_eq!(err.path, "keys[0].rpm");
    let err = Config::parse(&with("rpm = 0")).unwrap_err();
    assert_eq!(err.path, "orgs[0].rpm");
}

/// The admin API's limits bodies are the same block: unknown fields
/// refused, and stored as the same JSON as before the block was one type.
#[test]
fn the_admin_limits_bodies_are_the_block() {
    let org: OrgLimits = serde_json::from_str(
        r#"{"rpm":1,"tpm":2,"quotas":[{"period":"month","max_usd":5.5}],"models":[{"model":"m","rpm":3}]}"#,
    )
    .unwrap();
    assert_eq!(org.limits.rpm, Some(1));
    assert_eq!(
        serde_json::to_string(&org).unwrap(),
        r#"{"rpm":1,"tpm":2,"quotas":[{"period":"month","max_usd":5.5}],"models":[{"model":"m","rpm":3}]}"#
    );
    assert_eq!(serde_json::to_string(&OrgLimits::default()).unwrap(), "{}");
    assert!(OrgLimits::default().is_empty() && Limits::default().is_empty());
    for bad in [r#"{"rpmm":1}"#, r#"{"models":[],"x":1}"#, r#"{"quotas":[{"period":"day","max_usd":1,"y":2}]}"#] {
        let err = serde_json::from_str::<OrgLimits>(bad).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{bad}: {err}");
    }
    let err = serde_json::from_str::<KeyLimits>(r#"{"rpm":1,"models":[]}"#).unwrap_err().to_string();
    assert!(err.contains("unknown field `models`"), "{err}");
    let err = serde_json::from_str::<OrgLimits>(r#"{"rpm":"many"}"#).unwrap_err().to_string();
    assert!(err.starts_with("rpm: invalid type"), "{err}");
    let key: KeyLimits = serde_json::from_str(r#"{"tpm":7}"#).unwrap();
    assert_eq!(serde_json::to_string(&key).unwrap(), r#"{"tpm":7}"#);
}

/// The file says `[[providers]]`, `[[routes]]` and a target's `provider`, as
/// the admin API does; the old spellings still read the same, reported as
/// deprecated, and errors name paths in the file's own spelling.
#[test]
fn old_and_new_spellings_read_the_same_and_the_old_is_reported() {
    let old = sample();
    let new = old
        .replace("[[upstreams]]", "[[providers]]")
        .replace("[[models]]", "[[routes]]")
        .replace("upstream =", "provider =");
    let (o, n) = (Config::parse(&old).unwrap(), Config::parse(&new).unwrap());
    assert!(n.deprecations.is_empty(), "{:?}", n.deprecations);
    assert_eq!(o.deprecations.len(), 3, "{:?}", o.deprecations);
    assert!(o.deprecations[0].contains("[[upstreams]]") && o.deprecations[0].contains("[[providers]]"));
    assert!(o.deprecations[1].contains("[[models]]") && o.deprecations[1].contains("[[routes]]"));
    assert!(o.deprecations[2].contains("2 in this file"), "{}", o.deprecations[2]);
    assert_eq!(Config { deprecations: Vec::new(), ..o.clone() }, n);
    assert_eq!(o.routing(), n.routing(), "the same routing spec (and wire format)");
    // A mix: each table in either spelling.
    let mixed = old.replace("[[models]]", "[[routes]]");
    let m = Config::parse(&mixed).unwrap();
    assert_eq!(m.routing(), n.routing());
    assert_eq!(m.deprecations.len(), 2);
    // Both spellings of one table: refused.
    let both = format!("{old}\n[[providers]]\nname = \"other\"\nbase_url = \"http://127.0.0.1:1/v1\"\n");
    assert!(Config::parse(&both).unwrap_err().to_string().contains("duplicate field"));
    let target = new.replace("provider = \"mock\" }", "provider = \"mock\", upstream = \"mock\" }");
    assert!(Config::parse(&target).unwrap_err().to_string().contains("duplicate field"));
    // Paths in the file's spelling.
    let bad = |text: &str| Config::parse(&text.replacen("\"mock\" }", "\"nope\" }", 1)).unwrap_err().path;
    assert_eq!(bad(&new), "routes[0].targets[0].provider");
    assert_eq!(bad(&old), "models[0].targets[0].upstream");
    let dup = |text: &str| Config::parse(&text.replace("name = \"fast\"", "name = \"gpt-4o-mini\"")).unwrap_err().path;
    assert!(dup(&new).starts_with("routes[1]"), "{}", dup(&new));
    assert!(dup(&old).starts_with("models[1]"), "{}", dup(&old));
    let url = |text: &str| Config::parse(&text.replace("9000/v1", "9000/v1?x")).unwrap_err().path;
    assert_eq!((url(&new).as_str(), url(&old).as_str()), ("providers[0].base_url", "upstreams[0].base_url"));
    // Written out, a config uses the new spelling of the tables.
    let written = toml::to_string(&n).unwrap();
    assert!(written.contains("[[providers]]") && written.contains("[[routes]]"), "{written}");
}
