//! Fixtures shared by the benchmarks: realistic request heads and bodies.

/// A chat-completions request head as the OpenAI Python SDK sends it.
pub fn sdk_head(key: &str, body_len: usize) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python 1.54.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.0\r\nX-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.11.7\r\nAuthorization: Bearer {key}\r\nX-Stainless-Async: false\r\nx-stainless-retry-count: 0\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes()
}

/// A chat body of about `bytes` bytes with `model` near the end (the worst case for a scan).
pub fn chat_body(bytes: usize) -> Vec<u8> {
    let mut content = String::new();
    while content.len() + 120 < bytes {
        content.push_str("The quick brown fox jumps over the lazy dog. ");
    }
    format!(
        r#"{{"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{content}"}}],"temperature":0.2,"model":"gpt-4o-mini","stream":true,"stream_options":{{"include_usage":true}}}}"#
    )
    .into_bytes()
}
