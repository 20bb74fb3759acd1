//! A string that never shows itself in `Debug` output or logs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret value (a provider API key). `Debug` and `Display` print a masked
/// hint only (`...abcd`), so a secret that ends up in a log line or a panic
/// message does not leak.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plaintext. Call sites are few and easy to audit: grep `expose`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A hint safe to show: the last four characters of a secret of at
    /// least 16 (a quarter at most), nothing of a shorter one.
    pub fn hint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < HINT_MIN_CHARS {
            return "***".to_string();
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("...{tail}")
    }
}

/// Secrets shorter than this show no character at all in their hint.
const HINT_MIN_CHARS: usize = 16;

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.hint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::new("sk-live-0123456789abcdef");
        assert_eq!(format!("{s:?}"), "Secret(...cdef)");
        assert_eq!(s.to_string(), "...cdef");
        assert_eq!(Secret::new("short").hint(), "***");
        // A 12-character header value showed 7 of its characters before.
        assert_eq!(Secret::new("abcdefghijkl").hint(), "***");
        assert_eq!(Secret::new("0123456789abcdef").hint(), "...cdef");
        assert_eq!(s.expose(), "sk-live-0123456789abcdef");
    }
}
