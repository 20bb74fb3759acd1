//! Phase "parse" (contract): the request checks OpenAI makes before it
//! generates anything, made here so that every client of the gateway sees
//! OpenAI's contract whatever the upstream accepts (llama.cpp, vLLM and
//! llama-cpp-python answer a chat body without `messages` with 200).
//!
//! The checks read what [`crate::request::scan`] collects in its single pass
//! over the body: `messages` is walked there (each message's `role` read,
//! everything else skipped, nothing copied), the other fields are raw slices.
//! Each failure is OpenAI's status, code, message and `param`.

use crate::error::GatewayError;
use crate::http::head::Endpoint;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// What the checks need, collected by the body scan.
#[derive(Debug, Default)]
pub struct Checks<'a> {
    pub messages: Option<Messages>,
    pub prompt: Option<&'a RawValue>,
    pub input: Option<&'a RawValue>,
    pub n: Option<&'a RawValue>,
    pub temperature: Option<&'a RawValue>,
    pub top_p: Option<&'a RawValue>,
    pub max_tokens: Option<&'a RawValue>,
    pub max_completion_tokens: Option<&'a RawValue>,
}

/// The roles OpenAI accepts in a chat message.
pub const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

/// `messages`, as far as the contract goes: how many, and the first fault.
#[derive(Debug, Default)]
pub struct Messages {
    pub count: usize,
    pub fault: Option<Fault>,
}

/// The first thing wrong with `messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `messages` is not an array (or null): the JSON type found.
    NotArray(&'static str),
    /// Message `i` is not an object.
    NotObject(usize, &'static str),
    /// Message `i` has no `role`.
    NoRole(usize),
    /// Message `i`'s role is not a string.
    RoleType(usize, &'static str),
    /// Message `i`'s role is not one OpenAI knows (the value, capped).
    BadRole(usize, String),
    /// Message `i` says `role` twice (an upstream might read either copy).
    TwoRoles(usize),
}

/// What kind of JSON value a raw slice is, in the words OpenAI's messages
/// use ("a string", "an object", ...). A raw value has no leading blanks, so
/// its first byte says.
fn kind_of(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// The visitor methods for a JSON scalar (null, boolean, number, string),
/// each answering `$make(kind)` with the kind's name: the cases where a
/// container was expected and something else came.
macro_rules! scalars_as {
    ($value:ty, $make:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok($make("null"))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($make("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($make("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$value, E> {
            Ok($make("a string"))
        }
    };
}

/// One message: only its role is read.
enum Message {
    Role(Result<(), Fault>),
    NotObject(&'static str),
}

/// Whether an object's key is `self.0` (escapes read), without a copy of
/// the key: serde reads a `Cow<str>` key as an owned `String` every time.
pub(crate) struct KeyIs(pub &'static str);

impl<'de> de::DeserializeSeed<'de> for KeyIs {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        struct V(&'static str);
        impl<'de> Visitor<'de> for V {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
                Ok(v == self.0)
            }
        }
        d.deserialize_str(V(self.0))
    }
}

/// Reads a message at index `i` (set by the array walk).
struct MessageAt(usize);

impl<'de> de::DeserializeSeed<'de> for MessageAt {
    type Value = Message;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Message, D::Error> {
        struct V(usize);
        impl<'de> Visitor<'de> for V {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
                let mut role: Option<Result<(), Fault>> = None;
                while let Some(is_role) = map.next_key_seed(KeyIs("role"))? {
                    if !is_role {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let v = map.next_value::<&'de RawValue>()?;
                    role = Some(match role {
                        None => check_role(self.0, v.get()),
                        Some(_) => Err(Fault::TwoRoles(self.0)),
                    });
                }
                Ok(Message::Role(role.unwrap_or(Err(Fault::NoRole(self.0)))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Message, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Message::NotObject("an array"))
            }
            scalars_as!(Message, Message::NotObject);
        }
        d.deserialize_any(V(self.0))
    }
}

fn check_role(i: usize, text: &str) -> Result<(), Fault> {
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return Err(Fault::RoleType(i, kind_of(text)));
    };
    if ROLES.contains(&inner) {
        return Ok(());
    }
    // Escaped (read it as what it says) or unknown (report it, capped).
    let value: Cow<'_, str> = match inner.contains('\\') {
        true => serde_json::from_str::<String>(text).map_or(Cow::Borrowed(inner), Cow::Owned),
        false => Cow::Borrowed(inner),
    };
    if ROLES.contains(&&*value) {
        return Ok(());
    }
    Err(Fault::BadRole(i, value.chars().take(64).collect()))
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut m = Messages::default();
                while let Some(msg) = seq.next_element_seed(MessageAt(m.count))? {
                    let fault = match msg {
                        Message::Role(Ok(())) => None,
                        Message::Role(Err(f)) => Some(f),
                        Message::NotObject(kind) => Some(Fault::NotObject(m.count, kind)),
                    };
                    if m.fault.is_none() {
                        m.fault = fault;
                    }
                    m.count += 1;
                }
                Ok(m)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Messages, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Messages { count: 0, fault: Some(Fault::NotArray("an object")) })
            }
            scalars_as!(Messages, |kind| Messages { count: 0, fault: Some(Fault::NotArray(kind)) });
        }
        d.deserialize_any(V)
    }
}

fn is_null(v: Option<&RawValue>) -> bool {
    v.is_none_or(|v| v.get() == "null")
}

/// A number field in `[min, max]` (`integer`: no fraction). `None` and null pass.
fn check_number(
    param: &'static str,
    v: Option<&RawValue>,
    min: f64,
    max: Option<f64>,
    integer: bool,
) -> Result<(), GatewayError> {
    let Some(v) = v.filter(|v| v.get() != "null") else { return Ok(()) };
    let text = v.get();
    let expected = if integer { "an integer" } else { "a decimal" };
    let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    if !is_number || (integer && text.contains(['.', 'e', 'E'])) {
        let got = if is_number { "a decimal" } else { kind_of(text) };
        return Err(GatewayError::invalid_param(
            param,
            "invalid_type",
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
        ));
    }
    // A JSON number always parses as f64 (huge ones to infinity: above any max).
    let x: f64 = text.parse().unwrap_or(f64::INFINITY);
    let (word, kind) = if integer { ("integer", "integer") } else { ("decimal", "decimal") };
    if x < min {
        return Err(GatewayError::invalid_param(
            param,
            if integer { "integer_below_min_value" } else { "decimal_below_min_value" },
            format!(
                "Invalid '{param}': {word} below minimum value. Expected a value >= {min}, but got {} instead.",
                shown(text)
            ),
        ));
    }
    if let Some(max) = max.filter(|m| x > *m) {
        return Err(GatewayError::invalid_param(
            param,
            if integer { "integer_above_max_value" } else { "decimal_above_max_value" },
            format!(
                "Invalid '{param}': {kind} above maximum value. Expected a value <= {max}, but got {} instead.",
                shown(text)
            ),
        ));
    }
    Ok(())
}

/// A number as the client wrote it, capped for the message.
fn shown(text: &str) -> &str {
    text.get(..text.len().min(32)).unwrap_or(text)
}

/// OpenAI's checks for `endpoint`, in its order: required fields, then ranges.
pub fn check(endpoint: &Endpoint, c: &Checks<'_>) -> Result<(), GatewayError> {
    match endpoint {
        Endpoint::ChatCompletions => {
            let m = match &c.messages {
                Some(m) if m.fault != Some(Fault::NotArray("null")) => m,
                // Absent, or null: missing, as for `prompt` and `input`.
                _ => return Err(GatewayError::missing_param("messages")),
            };
            if let Some(f) = &m.fault {
                return Err(message_error(f));
            }
            if m.count == 0 {
                return Err(GatewayError::invalid_param(
                    "messages",
                    "empty_array",
                    "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array \
                     instead."
                        .to_string(),
                ));
            }
        }
        Endpoint::Messages => return check_messages(c, true),
        Endpoint::CountTokens => return check_messages(c, false),
        Endpoint::Completions if is_null(c.prompt) => return Err(GatewayError::missing_param("prompt")),
        Endpoint::Embeddings if is_null(c.input) => return Err(GatewayError::missing_param("input")),
        _ => {}
    }
    if matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        check_number("n", c.n, 1.0, Some(128.0), true)?;
        check_number("temperature", c.temperature, 0.0, Some(2.0), false)?;
        check_number("top_p", c.top_p, 0.0, Some(1.0), false)?;
        check_number("max_tokens", c.max_tokens, 1.0, None, true)?;
        check_number("max_completion_tokens", c.max_completion_tokens, 1.0, None, true)?;
    }
    Ok(())
}

/// Anthropic's Messages request (and, with `generation` false, its
/// count_tokens request, which has no sampling fields): `messages` an array of at least one,
/// `max_tokens` a positive integer (required), `temperature` 0 to 1,
/// `top_p` 0 to 1. Message contents (blocks, roles) are the provider's to
/// check: a passthrough relays its answer.
fn check_messages(c: &Checks<'_>, generation: bool) -> Result<(), GatewayError> {
    match &c.messages {
        Some(m) if m.fault != Some(Fault::NotArray("null")) => {
            if let Some(Fault::NotArray(kind)) = &m.fault {
                return Err(GatewayError::invalid_param(
                    "messages",
                    "invalid_type",
                    format!("messages: expected an array of messages, but got {kind}."),
                ));
            }
            if m.count == 0 {
                return Err(GatewayError::invalid_param(
                    "messages",
                    "empty_array",
                    "messages: at least one message is required.".to_string(),
                ));
            }
        }
        _ => return Err(GatewayError::missing_param("messages")),
    }
    if !generation {
        // count_tokens: no `max_tokens`, nothing sampled.
        return Ok(());
    }
    if is_null(c.max_tokens) {
        return Err(GatewayError::missing_param("max_tokens"));
    }
    check_number("max_tokens", c.max_tokens, 1.0, None, true)?;
    check_number("temperature", c.temperature, 0.0, Some(1.0), false)?;
    check_number("top_p", c.top_p, 0.0, Some(1.0), false)?;
    Ok(())
}

fn message_error(f: &Fault) -> GatewayError {
    match f {
        Fault::NotArray(kind) => GatewayError::invalid_param(
            "messages",
            "invalid_type",
            format!("Invalid type for 'messages': expected an array of objects, but got {kind} instead."),
        ),
        Fault::NotObject(i, kind) => GatewayError::invalid_param(
            format!("messages[{i}]"),
            "invalid_type",
            format!("Invalid type for 'messages[{i}]': expected an object, but got {kind} instead."),
        ),
        Fault::NoRole(i) => GatewayError::invalid_param(
            format!("messages[{i}].role"),
            "missing_required_parameter",
            format!("Missing required parameter: 'messages[{i}].role'."),
        ),
        Fault::RoleType(i, kind) => GatewayError::invalid_param(
            format!("messages[{i}].role"),
            "invalid_type",
            format!("Invalid type for 'messages[{i}].role': expected one of {}, but got {kind} instead.", roles()),
        ),
        Fault::TwoRoles(i) => GatewayError::invalid_json(format_args!("duplicate field `role` in `messages[{i}]`"))
            .with_param(format!("messages[{i}].role")),
        Fault::BadRole(i, v) => GatewayError::invalid_param(
            format!("messages[{i}].role"),
            "invalid_value",
            format!("Invalid value: '{v}'. Supported values are: {}.", roles()),
        ),
    }
}

fn roles() -> String {
    let quoted: Vec<String> = ROLES.iter().map(|r| format!("'{r}'")).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::scan;

    fn err(endpoint: Endpoint, body: &str) -> (Option<String>, Option<&'static str>, String) {
        let f = scan(body.as_bytes()).expect("scans");
        let e = check(&endpoint, &f.checks).expect_err(body);
        assert_eq!(e.status, 400, "{body}");
        assert_eq!(e.kind, "invalid_request_error");
        (e.param.map(|p| p.into_owned()), e.code, e.message.into_owned())
    }

    fn ok(endpoint: Endpoint, body: &str) {
        let f = scan(body.as_bytes()).expect("scans");
        check(&endpoint, &f.checks).unwrap_or_else(|e| panic!("{body}: {}", e.message));
    }

    #[test]
    fn chat_needs_a_non_empty_array_of_messages_with_known_roles() {
        use Endpoint::ChatCompletions as C;
        ok(C, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        for r in ROLES {
            ok(C, &format!(r#"{{"model":"m","messages":[{{"content":"x","role":"{r}"}}]}}"#));
        }
        let e = err(C, r#"{"model":"m"}"#);
        assert_eq!((e.0.as_deref(), e.1), (Some("messages"), Some("missing_required_parameter")));
        assert_eq!(err(C, r#"{"model":"m","messages":[]}"#).1, Some("empty_array"));
        let e = err(C, r#"{"model":"m","messages":"hi"}"#);
        assert_eq!((e.0.as_deref(), e.1), (Some("messages"), Some("invalid_type")));
        assert!(e.2.contains("but got a string"), "{}", e.2);
        let e = err(C, r#"{"model":"m","messages":null}"#);
        assert_eq!((e.0.as_deref(), e.1), (Some("messages"), Some("missing_required_parameter")));
        // A role said twice is refused whichever copy is the bad one.
        for two in [
            r#"[{"role":"bot","role":"user"}]"#,
            r#"[{"role":"user","role":"bot"}]"#,
            r#"[{"role":"user","role":"user"}]"#,
        ] {
            let e = err(C, &format!(r#"{{"model":"m","messages":{two}}}"#));
            assert_eq!((e.0.as_deref(), e.1), (Some("messages[0].role"), Some("invalid_json")), "{two}");
        }
        let e = err(C, r#"{"model":"m","messages":[{"role":"user"},5]}"#);
        assert_eq!((e.0.as_deref(), e.1), (Some("messages[1]"), Some("invalid_type")));
        let e = err(C, r#"{"model":"m","messages":[{"content":"x"}]}"#);
        assert_eq!((e.0.as_deref(), e.1), (Some("messages[0].role"), Some("missing_required_parameter")));
        let e = err(C, r#"{"model":"m","messages":[{"role":"user"},{"role":"robot"}]}"#);
        assert_eq!((e.0.as_deref(), e.1), (Some("messages[1].role"), Some("invalid_value")));
        assert!(e.2.starts_with("Invalid value: 'robot'."), "{}", e.2);
        let e = err(C, r#"{"model":"m","messages":[{"role":7}]}"#);
        assert_eq!((e.0.as_deref(), e.1), (Some("messages[0].role"), Some("invalid_type")));
        // An escaped role is read as what it says; a huge one is capped.
        ok(C, r#"{"model":"m","messages":[{"role":"\u0075ser"}]}"#);
        let e = err(C, &format!(r#"{{"model":"m","messages":[{{"role":"{}"}}]}}"#, "\u{202e}x".repeat(10_000)));
        assert!(e.2.len() < 400, "{}", e.2.len());
    }

    #[test]
    fn completions_need_a_prompt_and_embeddings_an_input() {
        assert_eq!(err(Endpoint::Completions, r#"{"model":"m"}"#).0.as_deref(), Some("prompt"));
        assert_eq!(err(Endpoint::Completions, r#"{"model":"m","prompt":null}"#).0.as_deref(), Some("prompt"));
        ok(Endpoint::Completions, r#"{"model":"m","prompt":"x"}"#);
        ok(Endpoint::Completions, r#"{"model":"m","prompt":["x","y"]}"#);
        assert_eq!(err(Endpoint::Embeddings, r#"{"model":"m"}"#).0.as_deref(), Some("input"));
        ok(Endpoint::Embeddings, r#"{"model":"m","input":"x"}"#);
    }

    #[test]
    fn ranges_are_openais() {
        use Endpoint::ChatCompletions as C;
        let m = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
        for (field, good, bad) in [
            (
                "n",
                &["1", "128", "null"][..],
                &[
                    ("0", "integer_below_min_value"),
                    ("-1", "integer_below_min_value"),
                    ("129", "integer_above_max_value"),
                    ("1.5", "invalid_type"),
                    ("\"2\"", "invalid_type"),
                    ("18446744073709551616", "integer_above_max_value"),
                ][..],
            ),
            (
                "temperature",
                &["0", "2", "0.7", "1e0", "null"],
                &[
                    ("-0.1", "decimal_below_min_value"),
                    ("2.01", "decimal_above_max_value"),
                    ("1e400", "decimal_above_max_value"),
                    ("true", "invalid_type"),
                ],
            ),
            (
                "top_p",
                &["0", "1", "0.95"],
                &[("1.5", "decimal_above_max_value"), ("-1", "decimal_below_min_value"), ("[]", "invalid_type")],
            ),
            (
                "max_tokens",
                &["1", "18446744073709551615", "null"],
                &[("0", "integer_below_min_value"), ("-1", "integer_below_min_value"), ("2.5", "invalid_type")],
            ),
            ("max_completion_tokens", &["16"], &[("0", "integer_below_min_value"), ("{}", "invalid_type")]),
        ] {
            for g in good {
                ok(C, &format!(r#"{{{m},"{field}":{g}}}"#));
            }
            for (b, code) in bad {
                let e = err(C, &format!(r#"{{{m},"{field}":{b}}}"#));
                assert_eq!((e.0.as_deref(), e.1), (Some(field), Some(*code)), "{field}={b}: {}", e.2);
            }
        }
        // Embeddings take none of these.
        ok(Endpoint::Embeddings, r#"{"model":"m","input":"x","n":0}"#);
    }
}
