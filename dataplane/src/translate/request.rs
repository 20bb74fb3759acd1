//! Request bodies: Messages → chat and chat → Messages.
//!
//! The body is parsed whole (it is already bounded by `max_body_bytes`), each
//! field the client sent is taken out of it and mapped. A feature of the
//! source API the target's lacks is an [`Unsupported`] naming it (a 400,
//! never silently dropped). Fields whose loss would not change the answer's
//! meaning (`cache_control`, `service_tier`, `seed`, …) are dropped. A
//! top-level field neither API defines (a server's own extension: vLLM's
//! `repetition_penalty`, llama.cpp's `min_p`, `chat_template_kwargs`, …) goes
//! to the target as sent: it honours it or refuses it itself.
//! docs/anthropic.md ("What is translated") lists them.

use super::common::{anthropic_tool_id, reasoning_effort, thinking_budget, write_json, DEFAULT_MAX_TOKENS};
use super::{RequestFacts, Unsupported};
use serde_json::{json, Map, Value};

type Obj = Map<String, Value>;

/// An Anthropic Messages request body → an OpenAI chat request body in `out`
/// (`model` replaces the client's model name when given).
pub fn messages_to_chat(body: &[u8], model: Option<&str>, out: &mut Vec<u8>) -> Result<RequestFacts, Unsupported> {
    let mut req = parse_object(body)?;
    let mut facts = RequestFacts::default();
    let mut prompt = Estimate::default();
    let mut o = Obj::new();
    o.insert("model".into(), Value::String(model_name(&mut req, model)?));

    let mut messages = Vec::new();
    if let Some(system) = take(&mut req, "system") {
        let text = system_text(system, "system")?;
        prompt.add(text.len());
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let Some(Value::Array(input)) = take(&mut req, "messages") else {
        return Err(Unsupported::new("messages", "`messages` must be an array of messages."));
    };
    for (i, m) in input.into_iter().enumerate() {
        anthropic_message(m, i, &mut messages, &mut prompt)?;
    }
    o.insert("messages".into(), Value::Array(messages));

    match take(&mut req, "max_tokens") {
        Some(v) => {
            o.insert("max_tokens".into(), Value::from(positive_int(&v, "max_tokens")?));
        }
        None => return Err(Unsupported::new("max_tokens", "`max_tokens` is required.")),
    }
    if let Some(v) = take(&mut req, "stop_sequences") {
        let stops = string_array(v, "stop_sequences")?;
        if !stops.is_empty() {
            o.insert("stop".into(), Value::Array(stops));
        }
    }
    for name in ["temperature", "top_p"] {
        if let Some(v) = take(&mut req, name) {
            o.insert(name.into(), number(v, name)?);
        }
    }
    // OpenAI itself rejects `top_k`; llama.cpp, vLLM and Ollama take it.
    if let Some(v) = take(&mut req, "top_k") {
        o.insert("top_k".into(), Value::from(int(&v, "top_k")?));
    }
    if let Some(v) = take(&mut req, "metadata") {
        let Value::Object(mut meta) = v else {
            return Err(Unsupported::new("metadata", "`metadata` must be an object."));
        };
        match take(&mut meta, "user_id") {
            Some(Value::String(user)) => {
                o.insert("user".into(), Value::String(user));
            }
            Some(_) => return Err(Unsupported::new("metadata.user_id", "`metadata.user_id` must be a string.")),
            None => {}
        }
        if let Some(k) = meta.keys().next() {
            return Err(unknown(&format!("metadata.{k}")));
        }
    }
    if let Some(v) = take(&mut req, "thinking") {
        if let Some(effort) = thinking_to_effort(v)? {
            o.insert("reasoning_effort".into(), Value::from(effort));
        }
    }
    let mut parallel = true;
    let tools = take(&mut req, "tools");
    let has_tools = matches!(&tools, Some(Value::Array(t)) if !t.is_empty());
    if let Some(v) = take(&mut req, "tool_choice") {
        let (choice, disable_parallel) = anthropic_tool_choice(v)?;
        parallel = !disable_parallel;
        // OpenAI refuses a `tool_choice` without tools; it means nothing then.
        if has_tools {
            o.insert("tool_choice".into(), choice);
        }
    }
    if let Some(v) = tools {
        let Value::Array(tools) = v else {
            return Err(Unsupported::new("tools", "`tools` must be an array."));
        };
        let mut out_tools = Vec::with_capacity(tools.len());
        for (i, t) in tools.into_iter().enumerate() {
            out_tools.push(anthropic_tool(t, i, &mut prompt)?);
        }
        if !out_tools.is_empty() {
            o.insert("tools".into(), Value::Array(out_tools));
        }
    }
    // OpenAI refuses `parallel_tool_calls` without tools.
    if !parallel && has_tools {
        o.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    if let Some(v) = take(&mut req, "stream") {
        facts.stream = boolean(&v, "stream")?;
    }
    if facts.stream {
        o.insert("stream".into(), Value::Bool(true));
        // A Messages stream carries usage, so the chat stream must too.
        o.insert("stream_options".into(), json!({"include_usage": true}));
        facts.include_usage = true;
    }
    // Dropped: they change how Anthropic runs the request (priority
    // capacity, server-side context editing), not what it means.
    take(&mut req, "service_tier");
    take(&mut req, "context_management");
    // Anthropic's server-side features: an OpenAI-kind target has none.
    refuse_or_pass(req, &["container", "mcp_servers"], &mut o)?;
    facts.estimated_input_tokens = prompt.tokens();
    write_json(out, &Value::Object(o));
    Ok(facts)
}

/// An OpenAI chat request body → an Anthropic Messages request body in `out`.
pub fn chat_to_messages(body: &[u8], model: Option<&str>, out: &mut Vec<u8>) -> Result<RequestFacts, Unsupported> {
    let mut req = parse_object(body)?;
    let mut facts = RequestFacts::default();
    let mut prompt = Estimate::default();
    let mut o = Obj::new();
    o.insert("model".into(), Value::String(model_name(&mut req, model)?));

    let Some(Value::Array(input)) = take(&mut req, "messages") else {
        return Err(Unsupported::new("messages", "`messages` must be an array of messages."));
    };
    let mut turns = Turns::default();
    for (i, m) in input.into_iter().enumerate() {
        chat_message(m, i, &mut turns, &mut prompt)?;
    }
    turns.flush();
    if !turns.system.is_empty() {
        o.insert("system".into(), Value::String(turns.system));
    }
    o.insert("messages".into(), Value::Array(turns.messages));

    let max_tokens = match (take(&mut req, "max_completion_tokens"), take(&mut req, "max_tokens")) {
        (Some(v), _) => Some(positive_int(&v, "max_completion_tokens")?),
        (None, Some(v)) => Some(positive_int(&v, "max_tokens")?),
        (None, None) => None,
    };
    let mut budget = None;
    if let Some(v) = take(&mut req, "reasoning_effort") {
        let effort = v.as_str().unwrap_or("");
        budget = thinking_budget(effort).ok_or_else(|| {
            Unsupported::new(
                "reasoning_effort",
                "`reasoning_effort` must be one of `none`, `minimal`, `low`, `medium`, `high`.",
            )
        })?;
    }
    // Without a `max_tokens`, room for the thinking budget plus an answer.
    let max_tokens = max_tokens.unwrap_or(DEFAULT_MAX_TOKENS.saturating_add(budget.unwrap_or(0)));
    if let Some(b) = budget {
        if b >= max_tokens {
            return Err(Unsupported::new(
                "reasoning_effort",
                format!(
                    "`reasoning_effort` asks for a thinking budget of {b} tokens, which must be less than `max_tokens` ({max_tokens}) for this target."
                ),
            ));
        }
        o.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": b}));
    }
    o.insert("max_tokens".into(), Value::from(max_tokens));
    match take(&mut req, "stop") {
        Some(Value::String(s)) => {
            o.insert("stop_sequences".into(), Value::Array(vec![Value::String(s)]));
        }
        Some(v) => {
            let stops = string_array(v, "stop")?;
            if !stops.is_empty() {
                o.insert("stop_sequences".into(), Value::Array(stops));
            }
        }
        None => {}
    }
    if let Some(v) = take(&mut req, "temperature") {
        let t = number(v, "temperature")?;
        if !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t)) {
            return Err(Unsupported::new(
                "temperature",
                "`temperature` must be between 0 and 1 for this target (Anthropic's range).",
            ));
        }
        o.insert("temperature".into(), t);
    }
    if let Some(v) = take(&mut req, "top_p") {
        o.insert("top_p".into(), number(v, "top_p")?);
    }
    if let Some(v) = take(&mut req, "top_k") {
        o.insert("top_k".into(), Value::from(int(&v, "top_k")?));
    }
    if let Some(v) = take(&mut req, "n") {
        if int(&v, "n")? != 1 {
            return Err(Unsupported::new("n", "Only `n` = 1 is supported for this target."));
        }
    }
    if let Some(v) = take(&mut req, "logprobs") {
        if boolean(&v, "logprobs")? {
            return Err(Unsupported::new("logprobs", "`logprobs` is not supported for this target."));
        }
    }
    if take(&mut req, "top_logprobs").is_some() {
        return Err(Unsupported::new("top_logprobs", "`top_logprobs` is not supported for this target."));
    }
    if let Some(v) = take(&mut req, "logit_bias") {
        if !matches!(&v, Value::Object(m) if m.is_empty()) {
            return Err(Unsupported::new("logit_bias", "`logit_bias` is not supported for this target."));
        }
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = take(&mut req, name) {
            if number(v, name)?.as_f64() != Some(0.0) {
                return Err(Unsupported::new(name, format!("A non-zero `{name}` is not supported for this target.")));
            }
        }
    }
    if let Some(v) = take(&mut req, "response_format") {
        if v.get("type").and_then(Value::as_str) != Some("text") {
            return Err(Unsupported::new(
                "response_format",
                "Only `response_format` {\"type\": \"text\"} is supported for this target.",
            ));
        }
    }
    if let Some(v) = take(&mut req, "modalities") {
        let text_only = matches!(&v, Value::Array(m) if m.iter().all(|m| m.as_str() == Some("text")));
        if !text_only {
            return Err(Unsupported::new("modalities", "Only the `text` modality is supported for this target."));
        }
    }
    match take(&mut req, "user") {
        Some(Value::String(user)) => {
            o.insert("metadata".into(), json!({"user_id": user}));
        }
        Some(_) => return Err(Unsupported::new("user", "`user` must be a string.")),
        None => {}
    }
    let tools = take(&mut req, "tools");
    let mut choice = match take(&mut req, "tool_choice") {
        Some(v) => Some(chat_tool_choice(v)?),
        None => None,
    };
    if let Some(v) = take(&mut req, "parallel_tool_calls") {
        if !boolean(&v, "parallel_tool_calls")? {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c["type"] != "none" {
                c["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
    }
    if let Some(v) = tools {
        let Value::Array(tools) = v else {
            return Err(Unsupported::new("tools", "`tools` must be an array."));
        };
        let mut out_tools = Vec::with_capacity(tools.len());
        for (i, t) in tools.into_iter().enumerate() {
            out_tools.push(chat_tool(t, i, &mut prompt)?);
        }
        if !out_tools.is_empty() {
            o.insert("tools".into(), Value::Array(out_tools));
            if let Some(c) = choice {
                o.insert("tool_choice".into(), c);
            }
        }
        // Without tools a `tool_choice` means nothing (Anthropic rejects one).
    }
    if let Some(v) = take(&mut req, "stream") {
        facts.stream = boolean(&v, "stream")?;
    }
    if let Some(v) = take(&mut req, "stream_options") {
        if let Some(u) = v.get("include_usage") {
            facts.include_usage = boolean(u, "stream_options.include_usage")?;
        }
    }
    if facts.stream {
        o.insert("stream".into(), Value::Bool(true));
    }
    // Dropped: OpenAI's storage, billing tier, sampling seed and latency
    // hints; none changes what the answer means.
    for name in ["store", "metadata", "service_tier", "seed", "prediction", "prompt_cache_key", "safety_identifier"] {
        take(&mut req, name);
    }
    // OpenAI's features Anthropic lacks.
    let openai_only =
        ["audio", "modalities", "functions", "function_call", "web_search_options", "top_logprobs", "verbosity"];
    refuse_or_pass(req, &openai_only, &mut o)?;
    facts.estimated_input_tokens = prompt.tokens();
    write_json(out, &Value::Object(o));
    Ok(facts)
}

/// Bytes of prompt text seen, for [`RequestFacts::estimated_input_tokens`]:
/// about 4 bytes a token (rounded up), saturating.
#[derive(Default)]
struct Estimate(u64);

impl Estimate {
    fn add(&mut self, bytes: usize) {
        self.0 = self.0.saturating_add(bytes as u64);
    }
    fn add_json(&mut self, v: &Value) {
        // Only for sizes: a `Value` always serializes.
        self.add(serde_json::to_vec(v).map_or(0, |b| b.len()));
    }
    fn tokens(&self) -> u64 {
        self.0.div_ceil(4)
    }
}

fn parse_object(body: &[u8]) -> Result<Obj, Unsupported> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Unsupported::new("", "The request body must be a JSON object.")),
        Err(e) => Err(Unsupported::new("", format!("The request body is not valid JSON: {e}."))),
    }
}

/// Take a field out (a `null` counts as absent).
fn take(o: &mut Obj, key: &str) -> Option<Value> {
    o.remove(key).filter(|v| !v.is_null())
}

/// The fields left once the translation took what it maps: one of
/// `refused` (a feature of the source API the target lacks) is an
/// [`Unsupported`]; any other (an extension neither API defines) goes to the
/// target as sent, unless the translation already wrote that field.
fn refuse_or_pass(left: Obj, refused: &[&str], o: &mut Obj) -> Result<(), Unsupported> {
    if let Some(k) = refused.iter().find(|k| left.contains_key(**k)) {
        return Err(unknown(k));
    }
    for (k, v) in left {
        o.entry(k).or_insert(v);
    }
    Ok(())
}

fn unknown(param: &str) -> Unsupported {
    Unsupported::new(param, format!("`{param}` is not supported when this request is translated for its target."))
}

fn model_name(req: &mut Obj, model: Option<&str>) -> Result<String, Unsupported> {
    match (take(req, "model"), model) {
        (_, Some(m)) => Ok(m.to_owned()),
        (Some(Value::String(m)), None) => Ok(m),
        _ => Err(Unsupported::new("model", "`model` must be a string.")),
    }
}

fn positive_int(v: &Value, param: &str) -> Result<u64, Unsupported> {
    v.as_u64()
        .filter(|n| *n >= 1)
        .ok_or_else(|| Unsupported::new(param, format!("`{param}` must be a positive integer.")))
}

fn int(v: &Value, param: &str) -> Result<u64, Unsupported> {
    v.as_u64().ok_or_else(|| Unsupported::new(param, format!("`{param}` must be a non-negative integer.")))
}

fn number(v: Value, param: &str) -> Result<Value, Unsupported> {
    if v.is_number() {
        Ok(v)
    } else {
        Err(Unsupported::new(param, format!("`{param}` must be a number.")))
    }
}

fn boolean(v: &Value, param: &str) -> Result<bool, Unsupported> {
    v.as_bool().ok_or_else(|| Unsupported::new(param, format!("`{param}` must be a boolean.")))
}

fn string_array(v: Value, param: &str) -> Result<Vec<Value>, Unsupported> {
    match v {
        Value::Array(a) if a.iter().all(Value::is_string) => Ok(a),
        _ => Err(Unsupported::new(param, format!("`{param}` must be an array of strings."))),
    }
}

fn block_type<'a>(b: &'a Obj, path: &str) -> Result<&'a str, Unsupported> {
    b.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Unsupported::new(format!("{path}.type"), "A content block needs a string `type`."))
}

fn string_field(b: &mut Obj, key: &str, path: &str) -> Result<String, Unsupported> {
    match b.remove(key) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(Unsupported::new(format!("{path}.{key}"), format!("`{key}` must be a string."))),
    }
}

// ---- Messages → chat ----

/// `system` (a string or text blocks; `cache_control` dropped) as one text.
fn system_text(v: Value, path: &str) -> Result<String, Unsupported> {
    match v {
        Value::String(s) => Ok(s),
        Value::Array(blocks) => {
            let mut text = String::new();
            for (j, b) in blocks.into_iter().enumerate() {
                let p = format!("{path}[{j}]");
                let Value::Object(mut b) = b else {
                    return Err(Unsupported::new(p, "A system block must be an object."));
                };
                if block_type(&b, &p)? != "text" {
                    return Err(Unsupported::new(format!("{p}.type"), "Only text blocks are supported in `system`."));
                }
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(&string_field(&mut b, "text", &p)?);
            }
            Ok(text)
        }
        _ => Err(Unsupported::new(path, "`system` must be a string or an array of text blocks.")),
    }
}

/// One Anthropic message → one or more chat messages.
fn anthropic_message(m: Value, i: usize, out: &mut Vec<Value>, prompt: &mut Estimate) -> Result<(), Unsupported> {
    let path = format!("messages[{i}]");
    let Value::Object(mut m) = m else {
        return Err(Unsupported::new(path, "A message must be an object."));
    };
    let role = match m.remove("role") {
        Some(Value::String(r)) if r == "user" || r == "assistant" => r,
        _ => return Err(Unsupported::new(format!("{path}.role"), "`role` must be `user` or `assistant`.")),
    };
    let content = m.remove("content");
    if let Some(k) = m.keys().next() {
        return Err(unknown(&format!("{path}.{k}")));
    }
    let blocks = match content {
        Some(Value::String(s)) => {
            prompt.add(s.len());
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(Unsupported::new(
                format!("{path}.content"),
                "`content` must be a string or an array of content blocks.",
            ))
        }
    };
    if role == "assistant" {
        assistant_blocks(blocks, &path, out, prompt)
    } else {
        user_blocks(blocks, &path, out, prompt)
    }
}

fn assistant_blocks(
    blocks: Vec<Value>,
    path: &str,
    out: &mut Vec<Value>,
    prompt: &mut Estimate,
) -> Result<(), Unsupported> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        let p = format!("{path}.content[{j}]");
        let Value::Object(mut b) = b else {
            return Err(Unsupported::new(p, "A content block must be an object."));
        };
        match block_type(&b, &p)? {
            "text" => {
                let t = string_field(&mut b, "text", &p)?;
                prompt.add(t.len());
                if !text.is_empty() && !t.is_empty() {
                    text.push('\n');
                }
                text.push_str(&t);
            }
            "tool_use" => {
                let id = string_field(&mut b, "id", &p)?;
                let name = string_field(&mut b, "name", &p)?;
                let input = match b.remove("input") {
                    Some(v @ Value::Object(_)) => v,
                    _ => return Err(Unsupported::new(format!("{p}.input"), "`input` must be an object.")),
                };
                let arguments = serde_json::to_string(&input).unwrap_or_else(|_| "{}".into());
                prompt.add(name.len().saturating_add(arguments.len()));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
            }
            // Earlier turns' thinking: chat has no way to send it back, and
            // the model does not need it to go on.
            "thinking" | "redacted_thinking" => {}
            other => return Err(unsupported_block(&p, other)),
        }
    }
    if text.is_empty() && calls.is_empty() {
        // Only thinking: nothing to send.
        return Ok(());
    }
    let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    out.push(msg);
    Ok(())
}

fn user_blocks(blocks: Vec<Value>, path: &str, out: &mut Vec<Value>, prompt: &mut Estimate) -> Result<(), Unsupported> {
    let mut parts = Vec::new();
    // Images a tool returned: a `tool` message carries only text, so they
    // open the user message that follows the tool messages.
    let mut tool_images = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        let p = format!("{path}.content[{j}]");
        let Value::Object(mut b) = b else {
            return Err(Unsupported::new(p, "A content block must be an object."));
        };
        match block_type(&b, &p)? {
            "text" => {
                let t = string_field(&mut b, "text", &p)?;
                prompt.add(t.len());
                parts.push(json!({"type": "text", "text": t}));
            }
            "image" => parts.push(json!({"type": "image_url", "image_url": {"url": image_url(&mut b, &p)?}})),
            "tool_result" => {
                // Tool results answer the previous assistant turn's calls:
                // they go first, in order, as `tool` messages.
                let id = string_field(&mut b, "tool_use_id", &p)?;
                let images_before = tool_images.len();
                let mut text = match b.remove("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s,
                    Some(Value::Array(inner)) => {
                        let mut text = String::new();
                        for (k, c) in inner.into_iter().enumerate() {
                            let cp = format!("{p}.content[{k}]");
                            let Value::Object(mut c) = c else {
                                return Err(Unsupported::new(cp, "A content block must be an object."));
                            };
                            match block_type(&c, &cp)? {
                                "text" => {
                                    if !text.is_empty() {
                                        text.push('\n');
                                    }
                                    text.push_str(&string_field(&mut c, "text", &cp)?);
                                }
                                "image" => tool_images
                                    .push(json!({"type": "image_url", "image_url": {"url": image_url(&mut c, &cp)?}})),
                                other => return Err(unsupported_block(&cp, other)),
                            }
                        }
                        text
                    }
                    Some(_) => {
                        return Err(Unsupported::new(
                            format!("{p}.content"),
                            "A tool result's `content` must be a string or text and image blocks.",
                        ))
                    }
                };
                let images = tool_images.len() - images_before;
                if images > 0 {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("[{images} image(s) attached in the next user message]"));
                    tool_images.insert(
                        images_before,
                        json!({"type": "text", "text": format!("Image(s) returned by tool call {id}:")}),
                    );
                }
                // Chat's tool messages have no error flag: say it in the text.
                if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text.insert_str(0, "Error: ");
                }
                prompt.add(text.len());
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            other => return Err(unsupported_block(&p, other)),
        }
    }
    if !tool_images.is_empty() {
        parts.splice(0..0, tool_images);
    }
    match parts.len() {
        0 => {}
        1 if parts[0]["type"] == "text" => {
            let text = parts.swap_remove(0)["text"].take();
            out.push(json!({"role": "user", "content": text}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

fn unsupported_block(path: &str, kind: &str) -> Unsupported {
    Unsupported::new(
        format!("{path}.type"),
        format!("Content blocks of type `{kind}` are not supported when this request is translated for its target."),
    )
}

/// An Anthropic image source → the URL chat's `image_url` takes.
fn image_url(b: &mut Obj, path: &str) -> Result<String, Unsupported> {
    let p = format!("{path}.source");
    let Some(Value::Object(mut src)) = b.remove("source") else {
        return Err(Unsupported::new(p, "An image needs a `source` object."));
    };
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = string_field(&mut src, "media_type", &p)?;
            let data = string_field(&mut src, "data", &p)?;
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => string_field(&mut src, "url", &p),
        _ => Err(Unsupported::new(
            format!("{p}.type"),
            "Only `base64` and `url` image sources are supported for this target.",
        )),
    }
}

fn anthropic_tool(t: Value, i: usize, prompt: &mut Estimate) -> Result<Value, Unsupported> {
    let p = format!("tools[{i}]");
    let Value::Object(mut t) = t else {
        return Err(Unsupported::new(p, "A tool must be an object."));
    };
    if let Some(kind) = t.get("type").and_then(Value::as_str) {
        if kind != "custom" {
            return Err(Unsupported::new(
                format!("{p}.type"),
                format!("Anthropic's server tool `{kind}` is not available on this target."),
            ));
        }
    }
    let name = string_field(&mut t, "name", &p)?;
    let schema = match t.remove("input_schema") {
        Some(v @ Value::Object(_)) => v,
        _ => return Err(Unsupported::new(format!("{p}.input_schema"), "`input_schema` must be an object.")),
    };
    prompt.add(name.len());
    prompt.add_json(&schema);
    let mut function = json!({"name": name, "parameters": schema});
    if let Some(Value::String(d)) = t.remove("description") {
        prompt.add(d.len());
        function["description"] = Value::String(d);
    }
    if let Some(Value::Bool(strict)) = t.remove("strict") {
        function["strict"] = Value::Bool(strict);
    }
    Ok(json!({"type": "function", "function": function}))
}

/// Anthropic's `tool_choice` → chat's, and whether parallel calls are off.
fn anthropic_tool_choice(v: Value) -> Result<(Value, bool), Unsupported> {
    let Value::Object(mut c) = v else {
        return Err(Unsupported::new("tool_choice", "`tool_choice` must be an object."));
    };
    let disable = c.get("disable_parallel_tool_use").and_then(Value::as_bool).unwrap_or(false);
    let choice = match c.get("type").and_then(Value::as_str) {
        Some("auto") => Value::from("auto"),
        Some("any") => Value::from("required"),
        Some("none") => Value::from("none"),
        Some("tool") => json!({"type": "function", "function": {"name": string_field(&mut c, "name", "tool_choice")?}}),
        _ => {
            return Err(Unsupported::new(
                "tool_choice.type",
                "`tool_choice.type` must be `auto`, `any`, `tool` or `none`.",
            ))
        }
    };
    Ok((choice, disable))
}

/// Anthropic's `thinking` → chat's `reasoning_effort` (`None`: no thinking).
fn thinking_to_effort(v: Value) -> Result<Option<&'static str>, Unsupported> {
    match v.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(None),
        Some("enabled") => {
            let budget = v.get("budget_tokens").and_then(Value::as_u64).ok_or_else(|| {
                Unsupported::new("thinking.budget_tokens", "`thinking.budget_tokens` must be a non-negative integer.")
            })?;
            Ok(Some(reasoning_effort(budget)))
        }
        _ => Err(Unsupported::new("thinking.type", "`thinking.type` must be `enabled` or `disabled`.")),
    }
}

// ---- chat → Messages ----

/// The Anthropic conversation being built: consecutive messages of one role
/// make one turn (tool results and a following user message share one).
#[derive(Default)]
struct Turns {
    system: String,
    messages: Vec<Value>,
    role: &'static str,
    blocks: Vec<Value>,
}

impl Turns {
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if role != self.role {
            self.flush();
            self.role = role;
        }
        self.blocks.extend(blocks);
    }

    fn flush(&mut self) {
        if !self.role.is_empty() && !self.blocks.is_empty() {
            let blocks = std::mem::take(&mut self.blocks);
            self.messages.push(json!({"role": self.role, "content": blocks}));
        }
        self.blocks.clear();
    }
}

fn chat_message(m: Value, i: usize, turns: &mut Turns, prompt: &mut Estimate) -> Result<(), Unsupported> {
    let path = format!("messages[{i}]");
    let Value::Object(mut m) = m else {
        return Err(Unsupported::new(path, "A message must be an object."));
    };
    let role = match m.remove("role") {
        Some(Value::String(r)) => r,
        _ => return Err(Unsupported::new(format!("{path}.role"), "`role` must be a string.")),
    };
    let content = m.remove("content").filter(|v| !v.is_null());
    match role.as_str() {
        "system" | "developer" => {
            let text = chat_text(content, &format!("{path}.content"))?;
            prompt.add(text.len());
            if !turns.system.is_empty() {
                turns.system.push_str("\n\n");
            }
            turns.system.push_str(&text);
        }
        "user" => {
            let blocks = match content {
                Some(Value::String(s)) => {
                    prompt.add(s.len());
                    vec![json!({"type": "text", "text": s})]
                }
                Some(Value::Array(parts)) => {
                    let mut blocks = Vec::with_capacity(parts.len());
                    for (j, part) in parts.into_iter().enumerate() {
                        blocks.push(user_part(part, &format!("{path}.content[{j}]"), prompt)?);
                    }
                    blocks
                }
                _ => {
                    return Err(Unsupported::new(
                        format!("{path}.content"),
                        "`content` must be a string or an array of content parts.",
                    ))
                }
            };
            turns.push("user", blocks);
        }
        "assistant" => {
            if m.get("function_call").is_some_and(|v| !v.is_null()) {
                return Err(Unsupported::new(
                    format!("{path}.function_call"),
                    "`function_call` is not supported for this target; use `tool_calls`.",
                ));
            }
            let mut blocks = Vec::new();
            let text = match content {
                None => String::new(),
                c => chat_text(c, &format!("{path}.content"))?,
            };
            if !text.is_empty() {
                prompt.add(text.len());
                blocks.push(json!({"type": "text", "text": text}));
            }
            if let Some(calls) = m.remove("tool_calls").filter(|v| !v.is_null()) {
                let Value::Array(calls) = calls else {
                    return Err(Unsupported::new(format!("{path}.tool_calls"), "`tool_calls` must be an array."));
                };
                for (j, call) in calls.into_iter().enumerate() {
                    blocks.push(tool_call(call, &format!("{path}.tool_calls[{j}]"), prompt)?);
                }
            }
            turns.push("assistant", blocks);
        }
        "tool" => {
            let id = match m.remove("tool_call_id") {
                Some(Value::String(s)) => s,
                _ => return Err(Unsupported::new(format!("{path}.tool_call_id"), "`tool_call_id` must be a string.")),
            };
            let text = chat_text(content, &format!("{path}.content"))?;
            prompt.add(text.len());
            let block = json!({"type": "tool_result", "tool_use_id": anthropic_tool_id(&id), "content": text});
            // Tool results open the user turn that follows the calls.
            if turns.role == "user" && turns.blocks.iter().any(|b| b["type"] != "tool_result") {
                turns.flush();
            }
            turns.push("user", vec![block]);
        }
        "function" => {
            return Err(Unsupported::new(
                format!("{path}.role"),
                "`function` messages are not supported for this target; use `tool` messages.",
            ))
        }
        _ => {
            return Err(Unsupported::new(
                format!("{path}.role"),
                "`role` must be `system`, `developer`, `user`, `assistant` or `tool`.",
            ))
        }
    }
    Ok(())
}

/// A chat content that must be text: a string, or text parts (joined; an
/// assistant's `refusal` parts count as text).
fn chat_text(content: Option<Value>, path: &str) -> Result<String, Unsupported> {
    match content {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.into_iter().enumerate() {
                let p = format!("{path}[{j}]");
                let Value::Object(mut part) = part else {
                    return Err(Unsupported::new(p, "A content part must be an object."));
                };
                let key = match part.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    _ => return Err(Unsupported::new(format!("{p}.type"), "Only text parts are supported here.")),
                };
                text.push_str(&string_field(&mut part, key, &p)?);
            }
            Ok(text)
        }
        Some(_) => Err(Unsupported::new(path, "`content` must be a string or an array of text parts.")),
    }
}

fn user_part(part: Value, path: &str, prompt: &mut Estimate) -> Result<Value, Unsupported> {
    let Value::Object(mut part) = part else {
        return Err(Unsupported::new(path, "A content part must be an object."));
    };
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let t = string_field(&mut part, "text", path)?;
            prompt.add(t.len());
            Ok(json!({"type": "text", "text": t}))
        }
        Some("image_url") => {
            let url = match part.remove("image_url") {
                Some(Value::Object(mut u)) => string_field(&mut u, "url", &format!("{path}.image_url"))?,
                Some(Value::String(u)) => u,
                _ => return Err(Unsupported::new(format!("{path}.image_url"), "`image_url` needs a `url`.")),
            };
            Ok(json!({"type": "image", "source": image_source(&url, &format!("{path}.image_url.url"))?}))
        }
        Some(other) => Err(Unsupported::new(
            format!("{path}.type"),
            format!("Content parts of type `{other}` are not supported for this target."),
        )),
        None => Err(Unsupported::new(format!("{path}.type"), "A content part needs a string `type`.")),
    }
}

/// A data URL → a base64 source; an http(s) URL → a url source.
fn image_source(url: &str, path: &str) -> Result<Value, Unsupported> {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            if let Some(media) = meta.strip_suffix(";base64") {
                return Ok(json!({"type": "base64", "media_type": media, "data": data}));
            }
        }
        return Err(Unsupported::new(path, "An image data URL must be base64 (`data:<type>;base64,<data>`)."));
    }
    let lower = url.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(Unsupported::new(path, "An image URL must be an http(s) or base64 data URL."))
}

fn tool_call(call: Value, path: &str, prompt: &mut Estimate) -> Result<Value, Unsupported> {
    let Value::Object(mut call) = call else {
        return Err(Unsupported::new(path, "A tool call must be an object."));
    };
    if call.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
        return Err(Unsupported::new(format!("{path}.type"), "Only `function` tool calls are supported."));
    }
    let id = string_field(&mut call, "id", path)?;
    let fp = format!("{path}.function");
    let Some(Value::Object(mut f)) = call.remove("function") else {
        return Err(Unsupported::new(fp, "A tool call needs a `function` object."));
    };
    let name = string_field(&mut f, "name", &fp)?;
    let arguments = match f.remove("arguments") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(Unsupported::new(format!("{fp}.arguments"), "`arguments` must be a string.")),
    };
    prompt.add(name.len().saturating_add(arguments.len()));
    let input = if arguments.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str::<Value>(&arguments) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(Unsupported::new(
                    format!("{fp}.arguments"),
                    "A tool call's `arguments` must be a JSON object for this target.",
                ))
            }
        }
    };
    Ok(json!({"type": "tool_use", "id": anthropic_tool_id(&id), "name": name, "input": input}))
}

fn chat_tool(t: Value, i: usize, prompt: &mut Estimate) -> Result<Value, Unsupported> {
    let p = format!("tools[{i}]");
    let Value::Object(mut t) = t else {
        return Err(Unsupported::new(p, "A tool must be an object."));
    };
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(Unsupported::new(format!("{p}.type"), "Only `function` tools are supported for this target."));
    }
    let fp = format!("{p}.function");
    let Some(Value::Object(mut f)) = t.remove("function") else {
        return Err(Unsupported::new(fp, "A tool needs a `function` object."));
    };
    let name = string_field(&mut f, "name", &fp)?;
    let schema = match f.remove("parameters") {
        Some(v @ Value::Object(_)) => v,
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(_) => return Err(Unsupported::new(format!("{fp}.parameters"), "`parameters` must be an object.")),
    };
    prompt.add(name.len());
    prompt.add_json(&schema);
    let mut tool = json!({"name": name, "input_schema": schema});
    if let Some(Value::String(d)) = f.remove("description") {
        prompt.add(d.len());
        tool["description"] = Value::String(d);
    }
    Ok(tool)
}

fn chat_tool_choice(v: Value) -> Result<Value, Unsupported> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            "none" => Ok(json!({"type": "none"})),
            _ => {
                Err(Unsupported::new("tool_choice", "`tool_choice` must be `auto`, `required`, `none` or a function."))
            }
        },
        Value::Object(mut c) if c.get("type").and_then(Value::as_str) == Some("function") => {
            let Some(Value::Object(mut f)) = c.remove("function") else {
                return Err(Unsupported::new("tool_choice.function", "`tool_choice.function` must be an object."));
            };
            Ok(json!({"type": "tool", "name": string_field(&mut f, "name", "tool_choice.function")?}))
        }
        _ => Err(Unsupported::new("tool_choice", "`tool_choice` must be `auto`, `required`, `none` or a function.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m2c(body: Value) -> Result<(Value, RequestFacts), Unsupported> {
        let mut out = Vec::new();
        let facts = messages_to_chat(body.to_string().as_bytes(), None, &mut out)?;
        Ok((serde_json::from_slice(&out).unwrap(), facts))
    }

    fn c2m(body: Value) -> Result<(Value, RequestFacts), Unsupported> {
        let mut out = Vec::new();
        let facts = chat_to_messages(body.to_string().as_bytes(), None, &mut out)?;
        Ok((serde_json::from_slice(&out).unwrap(), facts))
    }

    fn param_of(r: Result<(Value, RequestFacts), Unsupported>) -> String {
        match r {
            Err(e) => {
                assert!(!e.message.is_empty());
                e.param
            }
            Ok((v, _)) => panic!("expected Unsupported, got {v}"),
        }
    }

    #[test]
    fn a_messages_request_becomes_a_chat_request() {
        let (v, facts) = m2c(json!({
            "model": "claude", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Be kind."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "a b", "n": [1, 2]}},
                    {"type": "tool_use", "id": "toolu_2", "name": "look", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "text", "text": "and also"},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true, "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "such"}]},
                ]},
            ],
            "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "metadata": {"user_id": "u-1"},
            "tools": [{"name": "look", "description": "Looks.", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "stream": true,
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "model": "claude", "max_tokens": 100,
                "messages": [
                    {"role": "system", "content": "Be brief.\n\nBe kind."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                    ]},
                    {"role": "assistant", "content": "Let me look.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": "{\"n\":[1,2],\"q\":\"a b\"}"}},
                        {"id": "toolu_2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                    {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no\nsuch"},
                    {"role": "user", "content": "and also"},
                ],
                "stop": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 40, "user": "u-1",
                "tools": [{"type": "function", "function": {"name": "look", "description": "Looks.", "parameters": {"type": "object"}}}],
                "tool_choice": "required", "parallel_tool_calls": false,
                "reasoning_effort": "medium",
                "stream": true, "stream_options": {"include_usage": true},
            })
        );
        assert!(facts.stream && facts.include_usage);
        assert!(facts.estimated_input_tokens > 0);
    }

    #[test]
    fn images_a_tool_returned_follow_the_tool_messages() {
        let (v, _) = m2c(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "a screenshot"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
            {"type": "tool_result", "tool_use_id": "t2", "content": "plain"},
            {"type": "text", "text": "what now?"},
        ]}]}))
        .unwrap();
        assert_eq!(
            v["messages"],
            json!([
                {"role": "tool", "tool_call_id": "t1", "content": "a screenshot\n[1 image(s) attached in the next user message]"},
                {"role": "tool", "tool_call_id": "t2", "content": "plain"},
                {"role": "user", "content": [
                    {"type": "text", "text": "Image(s) returned by tool call t1:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "what now?"},
                ]},
            ])
        );
    }

    #[test]
    fn tool_choices_and_thinking_map_to_chat() {
        let base = |extra: Value| {
            let mut b = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            m2c(b).unwrap().0
        };
        assert_eq!(base(json!({"tool_choice": {"type": "auto"}}))["tool_choice"], "auto");
        assert_eq!(base(json!({"tool_choice": {"type": "none"}}))["tool_choice"], "none");
        assert_eq!(
            base(json!({"tool_choice": {"type": "tool", "name": "f"}}))["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert!(base(json!({"tool_choice": {"type": "auto"}})).get("parallel_tool_calls").is_none());
        assert_eq!(base(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}))["reasoning_effort"], "low");
        assert_eq!(base(json!({"thinking": {"type": "enabled", "budget_tokens": 20000}}))["reasoning_effort"], "high");
        assert!(base(json!({"thinking": {"type": "disabled"}})).get("reasoning_effort").is_none());
        let plain = base(json!({"stream": false, "temperature": null}));
        assert!(plain.get("stream").is_none() && plain.get("stream_options").is_none());
        assert!(plain.get("temperature").is_none());
        assert_eq!(plain["messages"], json!([{"role": "user", "content": "hi"}]));
        let mut no_tools = json!({"model": "m", "max_tokens": 5, "system": "", "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}});
        let v = m2c(no_tools.take()).unwrap().0;
        assert!(v.get("tool_choice").is_none() && v.get("parallel_tool_calls").is_none());
        assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn what_chat_cannot_carry_is_named() {
        let msg =
            |content: Value| json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]});
        assert_eq!(param_of(m2c(msg(json!([{"type": "document", "source": {}}])))), "messages[0].content[0].type");
        assert_eq!(
            param_of(m2c(msg(json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]}])))),
            "messages[0].content[0].content[0].type"
        );
        assert_eq!(
            param_of(m2c(msg(json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]}])))),
            "messages[0].content[0].content[0].source"
        );
        assert_eq!(param_of(m2c(msg(json!([{"type": "server_tool_use"}])))), "messages[0].content[0].type");
        assert_eq!(param_of(m2c(msg(json!([{"text": "no type"}])))), "messages[0].content[0].type");
        assert_eq!(param_of(m2c(msg(json!(5)))), "messages[0].content");
        let mut b = msg(json!("hi"));
        b["mcp_servers"] = json!([]);
        assert_eq!(param_of(m2c(b)), "mcp_servers");
        let mut b = msg(json!("hi"));
        b["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
        assert_eq!(param_of(m2c(b)), "tools[0].type");
        let mut b = msg(json!("hi"));
        b["metadata"] = json!({"user_id": "u", "other": 1});
        assert_eq!(param_of(m2c(b)), "metadata.other");
        let mut b = msg(json!("hi"));
        b["max_tokens"] = json!(-1);
        assert_eq!(param_of(m2c(b)), "max_tokens");
        let mut b = msg(json!("hi"));
        b["max_tokens"] = json!(18446744073709551616.0);
        assert_eq!(param_of(m2c(b)), "max_tokens");
        let mut b = msg(json!("hi"));
        b.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(param_of(m2c(b)), "max_tokens");
        let mut b = msg(json!("hi"));
        b["messages"][0]["role"] = json!("system");
        assert_eq!(param_of(m2c(b)), "messages[0].role");
        let mut b = msg(json!("hi"));
        b["thinking"] = json!({"type": "enabled"});
        assert_eq!(param_of(m2c(b)), "thinking.budget_tokens");
        let mut b = msg(json!("hi"));
        b["temperature"] = json!("hot");
        assert_eq!(param_of(m2c(b)), "temperature");
        for body in [&b"[]"[..], b"nope", b"", b"{\"model\":", b"\"str\""] {
            let e = messages_to_chat(body, None, &mut Vec::new()).unwrap_err();
            assert_eq!(e.param, "");
            assert!(chat_to_messages(body, None, &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn the_model_is_replaced_when_given_and_extremes_pass_through() {
        let odd = "\u{0}\u{202e}é😀\\\"".repeat(2000);
        let body = json!({"model": "alias", "max_tokens": u64::MAX, "messages": [{"role": "user", "content": odd.clone()}], "system": ""});
        let mut out = Vec::new();
        let facts = messages_to_chat(body.to_string().as_bytes(), Some("real-model"), &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "real-model");
        assert_eq!(v["max_tokens"], u64::MAX);
        // The empty system prompt is left out; the text passes intact.
        assert!(v["messages"][0]["content"] == odd.as_str(), "the text changed");
        assert_eq!(facts.estimated_input_tokens, (odd.len() as u64).div_ceil(4));
        // Empty content stays empty; an assistant turn of only thinking goes.
        let (v, facts) = m2c(json!({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": []},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
            {"role": "user", "content": ""},
        ]}))
        .unwrap();
        assert_eq!(v["messages"], json!([{"role": "user", "content": ""}]));
        assert_eq!(facts.estimated_input_tokens, 0);
        // Deep nesting is refused by the parser, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = format!("{{\"model\":\"m\",\"max_tokens\":1,\"messages\":{deep}}}");
        assert!(messages_to_chat(body.as_bytes(), None, &mut Vec::new()).is_err());
        assert!(chat_to_messages(body.as_bytes(), None, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_chat_request_becomes_a_messages_request() {
        let (v, facts) = c2m(json!({
            "model": "gpt", "max_completion_tokens": 300,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/b.jpg"}},
                ]},
                {"role": "assistant", "content": "Looking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\": 1}"}},
                    {"id": "functions.look:2", "type": "function", "function": {"name": "look", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "functions.look:2", "content": [{"type": "text", "text": "rain"}]},
                {"role": "user", "content": "thanks"},
            ],
            "stop": "END", "temperature": 1, "top_p": 0.5, "n": 1, "logprobs": false,
            "presence_penalty": 0, "frequency_penalty": 0.0, "response_format": {"type": "text"},
            "user": "u-2", "seed": 7, "store": false,
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks.", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false,
            "stream": true, "stream_options": {"include_usage": true},
        }))
        .unwrap();
        let mapped = anthropic_tool_id("functions.look:2").into_owned();
        assert_eq!(
            v,
            json!({
                "model": "gpt", "max_tokens": 300,
                "system": "Be brief.\n\nBe kind.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Look"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A"}},
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/b.jpg"}},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Looking."},
                        {"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": 1}},
                        {"type": "tool_use", "id": mapped, "name": "look", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                        {"type": "tool_result", "tool_use_id": mapped, "content": "rain"},
                        {"type": "text", "text": "thanks"},
                    ]},
                ],
                "stop_sequences": ["END"], "temperature": 1, "top_p": 0.5,
                "metadata": {"user_id": "u-2"},
                "tools": [{"name": "look", "description": "Looks.", "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "stream": true,
            })
        );
        assert!(facts.stream && facts.include_usage);
        assert!(facts.estimated_input_tokens > 0);
    }

    #[test]
    fn chat_defaults_and_reasoning_map_to_messages() {
        let base = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            c2m(b)
        };
        let (v, facts) = base(json!({})).unwrap();
        assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(v.get("stream").is_none() && !facts.stream && !facts.include_usage);
        assert_eq!(base(json!({"max_tokens": 9})).unwrap().0["max_tokens"], 9);
        assert_eq!(base(json!({"stop": ["a", "b"]})).unwrap().0["stop_sequences"], json!(["a", "b"]));
        assert!(base(json!({"stop": []})).unwrap().0.get("stop_sequences").is_none());
        let (v, _) = base(json!({"reasoning_effort": "medium"})).unwrap();
        assert_eq!(v["thinking"], json!({"type": "enabled", "budget_tokens": 8192}));
        assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS + 8192);
        let (v, _) = base(json!({"reasoning_effort": "low", "max_tokens": 4000})).unwrap();
        assert_eq!(v["thinking"]["budget_tokens"], 2048);
        assert!(base(json!({"reasoning_effort": "none"})).unwrap().0.get("thinking").is_none());
        assert_eq!(param_of(base(json!({"reasoning_effort": "high", "max_tokens": 1000}))), "reasoning_effort");
        assert_eq!(param_of(base(json!({"reasoning_effort": "max"}))), "reasoning_effort");
        let (v, _) = base(json!({"tool_choice": {"type": "function", "function": {"name": "f"}},
            "tools": [{"type": "function", "function": {"name": "f"}}]}))
        .unwrap();
        assert_eq!(v["tool_choice"], json!({"type": "tool", "name": "f"}));
        assert_eq!(v["tools"][0]["input_schema"], json!({"type": "object", "properties": {}}));
        // `tool_choice` without tools means nothing to Anthropic.
        assert!(base(json!({"tool_choice": "auto"})).unwrap().0.get("tool_choice").is_none());
        let (v, _) =
            base(json!({"parallel_tool_calls": false, "tools": [{"type": "function", "function": {"name": "f"}}]}))
                .unwrap();
        assert_eq!(v["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));
    }

    #[test]
    fn what_messages_cannot_carry_is_named() {
        let base = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            c2m(b)
        };
        for (extra, param) in [
            (json!({"temperature": 1.5}), "temperature"),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"frequency_penalty": -1}), "frequency_penalty"),
            (json!({"response_format": {"type": "json_object"}}), "response_format"),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (json!({"audio": {"voice": "x"}}), "audio"),
            (json!({"functions": []}), "functions"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": 1.5}), "max_tokens"),
            (json!({"tools": [{"type": "custom", "custom": {}}]}), "tools[0].type"),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
            (json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0].type",
            ),
            (json!({"messages": [{"role": "user", "content": [{"type": "file"}]}]}), "messages[0].content[0].type"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:text/plain,hi"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (json!({"messages": [{"role": "assistant", "function_call": {"name": "f"}}]}), "messages[0].function_call"),
            (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
            (json!({"messages": "hi"}), "messages"),
            (json!({"model": 5}), "model"),
            (json!({"audio": {"voice": "alloy"}}), "audio"),
            (json!({"web_search_options": {}}), "web_search_options"),
        ] {
            assert_eq!(param_of(base(extra.clone())), param, "{extra}");
        }
    }

    #[test]
    fn a_tool_round_trip_through_both_translators_keeps_ids_matched() {
        // A chat client's history with an odd id → Messages: the call and
        // its result carry the same mapped id.
        let (v, _) = c2m(json!({"model": "m", "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": "id with spaces", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "id with spaces", "content": "done"},
        ]}))
        .unwrap();
        let call_id = &v["messages"][1]["content"][0]["id"];
        assert_eq!(call_id, &v["messages"][2]["content"][0]["tool_use_id"]);
        assert!(call_id.as_str().unwrap().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        // An assistant message without content is a tool-only turn.
        assert_eq!(v["messages"][1]["content"].as_array().unwrap().len(), 1);
    }
    #[test]
    fn a_field_neither_api_defines_goes_to_the_target_as_sent() {
        // A server's own extension (vLLM's, llama.cpp's): the target decides.
        let (v, _) = m2c(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                                 "repetition_penalty": 1.1, "chat_template_kwargs": {"enable_thinking": false}}))
        .unwrap();
        assert_eq!(
            (v["repetition_penalty"].as_f64(), v["chat_template_kwargs"]["enable_thinking"].as_bool()),
            (Some(1.1), Some(false))
        );
        let (v, _) =
            c2m(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "mock": {"tokens": 3}})).unwrap();
        assert_eq!(v["mock"]["tokens"], 3);
        // What the translation writes wins over a client's field of the same name.
        let (v, _) =
            c2m(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7})).unwrap();
        assert_eq!(v["max_tokens"], 7);
        // Anthropic's server-side features have no OpenAI counterpart.
        let r = m2c(
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "mcp_servers": []}),
        );
        assert_eq!(param_of(r), "mcp_servers");
    }
}
