//! A string that never shows itself in `Debug` output or logs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret value (a provider API key). `Debug` and `Display` print a masked
/// hint only (`sk-...abcd`), so a secret that ends up in a log line or a panic
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

    /// A hint safe to show: the first three and last four characters of a
    /// long secret, nothing of a short one.
    pub fn hint(&self) -> String {
        let s = &self.0;
        let chars: Vec<char> = s.chars().collect();
        if chars.len() < 12 {
            return "***".to_string();
        }
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}...{tail}")
    }
}

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
        assert_eq!(format!("{s:?}"), "Secret(sk-...cdef)");
        assert_eq!(s.to_string(), "sk-...cdef");
        assert_eq!(Secret::new("short").hint(), "***");
        assert_eq!(s.expose(), "sk-live-0123456789abcdef");
    }
}
