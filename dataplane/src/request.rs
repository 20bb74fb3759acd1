//! Phase "parse" (body): find `model`, `stream` and `stream_options` in the
//! request body without building a document or re-serializing it.
//!
//! serde_json walks the top-level object once, borrowing: the three fields are
//! taken as raw JSON slices of the client's bytes and every other value is
//! skipped. The body is forwarded untouched, except that a route mapping an
//! alias splices the upstream model name over the `model` value's bytes.

use crate::error::GatewayError;
use crate::validate::{Checks, KeyIs, Messages};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// What the gateway needs from a request body.
#[derive(Debug)]
pub struct BodyFields<'a> {
    pub model: Cow<'a, str>,
    /// Byte range of the `model` value (quotes included) in the body.
    pub model_span: (usize, usize),
    pub stream: bool,
    /// `stream_options.include_usage`, when given.
    pub include_usage: Option<bool>,
    /// Byte range of the `stream_options` value, when present.
    pub stream_options_span: Option<(usize, usize)>,
    /// `max_completion_tokens` or `max_tokens`, when given as a number.
    pub max_tokens: Option<u64>,
    /// `temperature` is given and zero (a deterministic answer is asked for).
    pub temperature_zero: bool,
    /// What OpenAI's request checks read ([`crate::validate::check`]).
    pub checks: Checks<'a>,
}

#[derive(Default)]
struct Raw<'a> {
    model: Option<&'a RawValue>,
    stream: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
    max_tokens: Option<&'a RawValue>,
    max_completion_tokens: Option<&'a RawValue>,
    temperature: Option<&'a RawValue>,
    top_p: Option<&'a RawValue>,
    n: Option<&'a RawValue>,
    prompt: Option<&'a RawValue>,
    input: Option<&'a RawValue>,
    messages: Option<Messages>,
}

enum Field {
    Model,
    Stream,
    StreamOptions,
    MaxTokens,
    MaxCompletionTokens,
    Temperature,
    TopP,
    N,
    Prompt,
    Input,
    Messages,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "model" => Field::Model,
                    "stream" => Field::Stream,
                    "stream_options" => Field::StreamOptions,
                    "max_tokens" => Field::MaxTokens,
                    "max_completion_tokens" => Field::MaxCompletionTokens,
                    "temperature" => Field::Temperature,
                    "top_p" => Field::TopP,
                    "n" => Field::N,
                    "prompt" => Field::Prompt,
                    "input" => Field::Input,
                    "messages" => Field::Messages,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
                let mut raw = Raw::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let (slot, name) = match field {
                        Field::Model => (&mut raw.model, "model"),
                        Field::Stream => (&mut raw.stream, "stream"),
                        Field::StreamOptions => (&mut raw.stream_options, "stream_options"),
                        Field::MaxTokens => (&mut raw.max_tokens, "max_tokens"),
                        Field::MaxCompletionTokens => (&mut raw.max_completion_tokens, "max_completion_tokens"),
                        Field::Temperature => (&mut raw.temperature, "temperature"),
                        Field::TopP => (&mut raw.top_p, "top_p"),
                        Field::N => (&mut raw.n, "n"),
                        Field::Prompt => (&mut raw.prompt, "prompt"),
                        Field::Input => (&mut raw.input, "input"),
                        Field::Messages => {
                            if raw.messages.is_some() {
                                return Err(de::Error::custom("duplicate field `messages`"));
                            }
                            // Walked here, once: each role read, the rest skipped.
                            raw.messages = Some(map.next_value::<Messages>()?);
                            continue;
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        // The upstream might honour the other copy: refuse rather than guess.
                        return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
                    }
                    *slot = Some(map.next_value::<&'de RawValue>()?);
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V)
    }
}

/// `stream_options`, read so that each fault has its own message: a
/// duplicated `include_usage` is told apart from one of the wrong type.
#[derive(Default)]
struct StreamOptions<'a> {
    include_usage: Option<&'a RawValue>,
    duplicated: bool,
}

impl<'de> Deserialize<'de> for StreamOptions<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StreamOptions<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StreamOptions<'de>, A::Error> {
                let mut o = StreamOptions::default();
                while let Some(is_usage) = map.next_key_seed(KeyIs("include_usage"))? {
                    if !is_usage {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let v = map.next_value::<&'de RawValue>()?;
                    o.duplicated |= o.include_usage.is_some();
                    o.include_usage = Some(v);
                }
                Ok(o)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON value's text as a string, or why it is not one: `Err(false)` for
/// another type, `Err(true)` for a string that is not valid Unicode (a lone UTF-16 surrogate escape, `"\ud800"`).
fn json_string(text: &str) -> Result<Cow<'_, str>, bool> {
    if !text.starts_with('"') {
        return Err(false);
    }
    if !text.contains('\\') {
        return Ok(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    // The body parsed, so this is a well-formed JSON string: it can only fail
    // on an escape that makes no Unicode scalar (a lone surrogate).
    serde_json::from_str::<String>(text).map(Cow::Owned).map_err(|_| true)
}

/// JSON nested deeper than this is refused: the gateway would not recurse
/// (serde_json skips ignored values iteratively), but upstreams might.
pub const MAX_JSON_DEPTH: usize = 128;

/// Whether `body` nests arrays/objects deeper than [`MAX_JSON_DEPTH`]. A body
/// with fewer brackets than that cannot, so the common case is one SIMD count.
fn too_deep(body: &[u8]) -> bool {
    if memchr::memchr2_iter(b'[', b'{', body).nth(MAX_JSON_DEPTH).is_none() {
        return false;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in body {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Scan a request body: it must be a JSON object with a string `model`.
pub fn scan(body: &[u8]) -> Result<BodyFields<'_>, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::invalid_json("the body is empty"));
    }
    if too_deep(body) {
        return Err(GatewayError::invalid_json(format_args!("nested deeper than {MAX_JSON_DEPTH} levels")));
    }
    let raw: Raw<'_> = serde_json::from_slice(body).map_err(GatewayError::invalid_json)?;
    let model_raw = raw.model.ok_or_else(|| GatewayError::missing_param("model"))?;
    let text = model_raw.get();
    let model = json_string(text).map_err(|unicode| match unicode {
        true => GatewayError::invalid_value(
            "model",
            "Invalid 'model': the string is not valid Unicode (it has a lone UTF-16 surrogate escape such as \\ud800).",
        ),
        false => GatewayError::invalid_type("model", "a string"),
    })?;
    let model_span = span_of(body, text).ok_or_else(|| GatewayError::invalid_json("could not locate `model`"))?;
    let stream = match raw.stream.map(RawValue::get) {
        None | Some("null") => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(GatewayError::invalid_type("stream", "a boolean")),
    };
    let include_usage = match raw.stream_options {
        None => None,
        Some(v) if v.get() == "null" => None,
        Some(v) if v.get().starts_with('{') => {
            let o = serde_json::from_str::<StreamOptions<'_>>(v.get()).map_err(GatewayError::invalid_json)?;
            if o.duplicated {
                // The upstream might honour the other copy: refuse rather than guess.
                return Err(GatewayError::invalid_json("duplicate field `include_usage` in `stream_options`")
                    .with_param("stream_options.include_usage"));
            }
            match o.include_usage.map(RawValue::get) {
                None | Some("null") => None,
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(_) => return Err(GatewayError::invalid_type("stream_options.include_usage", "a boolean")),
            }
        }
        Some(_) => return Err(GatewayError::invalid_type("stream_options", "an object")),
    };
    let stream_options_span = match raw.stream_options {
        Some(v) => Some(
            span_of(body, v.get()).ok_or_else(|| GatewayError::invalid_json("could not locate `stream_options`"))?,
        ),
        None => None,
    };
    // Ranges are checked by `validate::check`; token limits read the value.
    let number = |v: Option<&RawValue>| v.and_then(|v| v.get().parse::<u64>().ok());
    let max_tokens = number(raw.max_completion_tokens).or(number(raw.max_tokens));
    let temperature_zero = raw.temperature.and_then(|v| v.get().parse::<f64>().ok()) == Some(0.0);
    let checks = Checks {
        messages: raw.messages,
        prompt: raw.prompt,
        input: raw.input,
        n: raw.n,
        temperature: raw.temperature,
        top_p: raw.top_p,
        max_tokens: raw.max_tokens,
        max_completion_tokens: raw.max_completion_tokens,
    };
    Ok(BodyFields {
        model,
        model_span,
        stream,
        include_usage,
        stream_options_span,
        max_tokens,
        temperature_zero,
        checks,
    })
}

/// Where `part` (borrowed from `body`) lies in it.
fn span_of(body: &[u8], part: &str) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let span = (start, start.checked_add(part.len())?);
    (span.1 <= body.len() && body.get(span.0..span.1) == Some(part.as_bytes())).then_some(span)
}

/// The edit that makes a streaming request ask for the final usage chunk
/// (`stream_options.include_usage: true`), keeping any other stream options:
/// `(start, end, replacement)` over the body's bytes.
pub fn include_usage_edit(body: &[u8], f: &BodyFields<'_>) -> Option<(usize, usize, Vec<u8>)> {
    const OPTIONS: &[u8] = br#"{"include_usage":true}"#;
    match f.stream_options_span {
        None => {
            // Insert the field first in the object.
            let open = body.iter().position(|&b| b == b'{')? + 1;
            let mut v = br#""stream_options":"#.to_vec();
            v.extend_from_slice(OPTIONS);
            v.push(b',');
            Some((open, open, v))
        }
        Some((s, e)) => {
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&body[s..e]).unwrap_or_default();
            map.insert("include_usage".into(), serde_json::Value::Bool(true));
            let v = serde_json::to_vec(&map).unwrap_or_else(|_| OPTIONS.to_vec());
            Some((s, e, v))
        }
    }
}

/// Write `body` with non-overlapping edits `(start, end, replacement)`
/// applied, in any order.
pub fn write_edited(body: &[u8], edits: &mut [(usize, usize, &[u8])], out: &mut Vec<u8>) {
    edits.sort_unstable_by_key(|e| e.0);
    let mut at = 0;
    for &(s, e, with) in edits.iter() {
        out.extend_from_slice(&body[at..s]);
        out.extend_from_slice(with);
        at = e;
    }
    out.extend_from_slice(&body[at..]);
}

/// The length of `body` after [`write_edited`].
pub fn edited_len(body_len: usize, edits: &[(usize, usize, &[u8])]) -> usize {
    edits.iter().fold(body_len, |n, &(s, e, with)| n - (e - s) + with.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fields_and_their_place() {
        let body = br#"{"messages":[{"role":"user","content":"hi \"model\": x"}],"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#;
        let f = scan(body).unwrap();
        assert_eq!(f.model, "gpt-4o");
        assert!(f.stream);
        assert_eq!(f.include_usage, Some(true));
        assert_eq!(&body[f.model_span.0..f.model_span.1], br#""gpt-4o""#);
        let mut out = Vec::new();
        write_edited(body, &mut [(f.model_span.0, f.model_span.1, br#""real-model""#)], &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "real-model");
        assert_eq!(v["messages"][0]["content"], "hi \"model\": x");
    }

    fn with_usage(body: &[u8]) -> serde_json::Value {
        let f = scan(body).unwrap();
        let (s, e, v) = include_usage_edit(body, &f).unwrap();
        let mut edits = [(s, e, v.as_slice()), (f.model_span.0, f.model_span.1, br#""up""#.as_slice())];
        let mut out = Vec::new();
        write_edited(body, &mut edits, &mut out);
        assert_eq!(out.len(), edited_len(body.len(), &edits));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn asks_for_usage_keeping_other_options() {
        let v = with_usage(br#" {"model":"m","stream":true,"messages":[]}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "up");
        let v = with_usage(br#"{"stream_options":{"include_usage":false,"x":1},"stream":true,"model":"m"}"#);
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage":true,"x":1}));
        assert_eq!(v["model"], "up");
        let v = with_usage(br#"{"model":"m","stream":true,"stream_options":null}"#);
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage":true}));
    }

    #[test]
    fn escaped_model_names_are_decoded() {
        let f = scan(br#"{"model":"a\u002fb"}"#).unwrap();
        assert_eq!(f.model, "a/b");
        assert!(!f.stream);
        assert_eq!(f.include_usage, None);
    }

    #[test]
    fn null_stream_and_options_are_defaults() {
        let f = scan(br#"{"model":"m","stream":null,"stream_options":null}"#).unwrap();
        assert!(!f.stream);
        assert_eq!(f.include_usage, None);
    }

    fn err(body: &[u8]) -> GatewayError {
        scan(body).unwrap_err()
    }

    #[test]
    fn bad_bodies_name_the_field() {
        assert_eq!(err(b"not json").code, Some("invalid_json"));
        assert_eq!(err(b"").code, Some("invalid_json"));
        assert_eq!(err(br#"["model"]"#).code, Some("invalid_json"));
        assert_eq!(err(br#"{"model":"a"} x"#).code, Some("invalid_json"));
        assert_eq!(err(br#"{"messages":[]}"#).param.as_deref(), Some("model"));
        assert_eq!(err(br#"{"model":5}"#).param.as_deref(), Some("model"));
        assert_eq!(err(br#"{"model":"m","stream":"yes"}"#).param.as_deref(), Some("stream"));
        assert_eq!(err(br#"{"model":"m","stream_options":true}"#).param.as_deref(), Some("stream_options"));
        assert_eq!(
            err(br#"{"model":"m","stream_options":{"include_usage":1}}"#).param.as_deref(),
            Some("stream_options.include_usage")
        );
        assert_eq!(err(br#"{"model":"a","model":"b"}"#).code, Some("invalid_json"));
    }

    #[test]
    fn a_lone_surrogate_and_a_duplicated_option_say_what_is_wrong() {
        let e = err(br#"{"model":"\ud800"}"#);
        assert_eq!((e.code, e.param.as_deref()), (Some("invalid_value"), Some("model")));
        assert_eq!(err(br#"{"model":"x\udc00y"}"#).code, Some("invalid_value"));
        assert!(e.message.contains("not valid Unicode") && e.message.contains("surrogate"), "{}", e.message);
        // A valid pair is fine.
        assert_eq!(scan(br#"{"model":"\ud83d\ude00"}"#).unwrap().model, "\u{1f600}");
        let e = err(br#"{"model":"m","stream_options":{"include_usage":true,"include_usage":false}}"#);
        assert_eq!((e.code, e.param.as_deref()), (Some("invalid_json"), Some("stream_options.include_usage")));
        assert!(e.message.contains("duplicate field `include_usage`"), "{}", e.message);
        let e = err(br#"{"model":"m","stream_options":{"include_usage":"yes"}}"#);
        assert_eq!(e.code, Some("invalid_type"));
        let f = scan(br#"{"model":"m","stream_options":{"x":{"include_usage":1},"include_usage":false}}"#).unwrap();
        assert_eq!(f.include_usage, Some(false));
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        let ok = format!(r#"{{"model":"m","x":"{}","y":{}1{}}}"#, "[".repeat(1000), "[".repeat(100), "]".repeat(100));
        assert!(scan(ok.as_bytes()).is_ok());
        let deep = format!(r#"{{"model":"m","y":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(scan(deep.as_bytes()).unwrap_err().code, Some("invalid_json"));
        let escaped = format!(r#"{{"model":"m","x":"\"{}"}}"#, "{".repeat(300));
        assert!(scan(escaped.as_bytes()).is_ok(), "{:?}", scan(escaped.as_bytes()).err().map(|e| e.message));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut body = br#"{"model":"m","x":"#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));
        assert_eq!(err(&body).code, Some("invalid_json"));
    }
}
