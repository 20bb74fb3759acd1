//! One vocabulary: the file says what the admin API says.
//!
//! | concept | config file | admin API | code (`shared`, data plane) |
//! |---|---|---|---|
//! | a service requests are sent to (base URL, keys, timeouts) | `[[providers]]` | `/v1/admin/providers` | `UpstreamSpec`, `Upstream` |
//! | a public model name and where its requests go | `[[routes]]` | `/v1/admin/routes` | `ModelSpec`, `Route` |
//! | one place a route sends to (a provider, or a node pool) | `targets = [{ provider = "..." }]` | `targets: [{"provider": ...}]` | `TargetSpec`, `Target` |
//!
//! Files written before the rename say `[[upstreams]]`, `[[models]]` and a
//! target's `upstream = "..."`. They are still read, exactly as before; each
//! deprecated spelling is reported once per load ([`Spelling::deprecations`],
//! logged by whoever loads the file), and a validation error's path is
//! given in the spelling the file uses ([`Spelling::respell`]). A file that
//! uses both spellings of one table is refused (a duplicate field).
//!
//! The Rust names (`upstreams`, `models`, `upstream`) stay, because the
//! routing spec is also the wire format between the admin and remote data
//! planes, which must keep understanding each other across versions.

use super::ConfigError;

/// Which spelling a config file uses for each renamed key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spelling {
    /// `[[upstreams]]` instead of `[[providers]]`.
    pub upstreams: bool,
    /// `[[models]]` instead of `[[routes]]`.
    pub models: bool,
    /// Targets that say `upstream = ` instead of `provider = `.
    pub target_upstream: usize,
    /// Targets that say `provider = ` (the current spelling).
    pub target_provider: usize,
    /// Whether the text could be read for its spelling at all.
    pub known: bool,
}

impl Spelling {
    /// Read the spelling from the file's text. Text the generic TOML reader
    /// refuses (not TOML, or an integer past `i64`, which no range allows)
    /// is taken as the old spelling: nothing respelled, nothing reported.
    pub fn of(text: &str) -> Spelling {
        let Ok(table) = text.parse::<toml::Table>() else {
            return Spelling { upstreams: true, models: true, target_upstream: 0, target_provider: 0, known: false };
        };
        let mut s = Spelling {
            known: true,
            upstreams: table.contains_key("upstreams"),
            models: table.contains_key("models"),
            ..Spelling::default()
        };
        let routes = ["routes", "models"].into_iter().filter_map(|k| table.get(k)?.as_array());
        let targets =
            routes.flatten().filter_map(|r| r.get("targets")?.as_array()).flatten().filter_map(|t| t.as_table());
        for t in targets {
            s.target_upstream += usize::from(t.contains_key("upstream"));
            s.target_provider += usize::from(t.contains_key("provider"));
        }
        s
    }

    /// One sentence per deprecated spelling used.
    pub fn deprecations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.known {
            return out;
        }
        if self.upstreams {
            out.push("`[[upstreams]]` is deprecated: rename the tables to `[[providers]]` (read the same)".to_string());
        }
        if self.models {
            out.push("`[[models]]` is deprecated: rename the tables to `[[routes]]` (read the same)".to_string());
        }
        if self.target_upstream > 0 {
            out.push(format!(
                "a target's `upstream = \"...\"` is deprecated ({} in this file): write `provider = \"...\"` (read the same)",
                self.target_upstream
            ));
        }
        out
    }

    /// Give an error's path in the file's own spelling: `routes[0].name`
    /// for a file that says `[[routes]]`, `models[0].name` for one that
    /// says `[[models]]`.
    pub fn respell(&self, mut e: ConfigError) -> ConfigError {
        if !self.upstreams {
            if let Some(rest) = e.path.strip_prefix("upstreams[") {
                e.path = format!("providers[{rest}");
            }
        }
        if !self.models {
            if let Some(rest) = e.path.strip_prefix("models[") {
                e.path = format!("routes[{rest}");
            }
        }
        if self.known && self.target_upstream == 0 && e.path.contains(".targets[") {
            if let Some(head) = e.path.strip_suffix(".upstream") {
                e.path = format!("{head}.provider");
            }
        }
        e
    }
}
