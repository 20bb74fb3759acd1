//! A request head arrives however the network cuts it: split at every byte
//! position across two reads, and at many across three, every driver answers
//! exactly as it does to the whole head in one read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// What must not depend on how the head was cut (the ids differ per request).
fn answer(r: &Response) -> (u16, serde_json::Value, serde_json::Value) {
    let v = r.json();
    (r.status, v["choices"].clone(), v["usage"].clone())
}

/// Send `bytes` in pieces cut at `cuts`, pausing between them so that the
/// gateway reads each piece on its own.
fn send_cut(c: &mut Conn, bytes: &[u8], cuts: &[usize]) -> Response {
    let mut from = 0;
    for &at in cuts {
        c.send(&bytes[from..at]);
        std::thread::sleep(Duration::from_millis(2));
        from = at;
    }
    c.send(&bytes[from..]);
    c.response()
}

#[test]
fn a_head_split_at_every_byte_gets_the_same_answer_under_both_drivers() {
    let up = mock();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"split"}],"mock":{"tokens":3}}"#;
    let req = request("POST", "/v1/chat/completions", Some(KEY), body, &[("X-Request-Id", "split-test")]);
    let head_len = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut drivers = vec!["legacy"];
    if switchboard_dataplane::server::choose_driver(switchboard_shared::config::Driver::IoUring).is_ok() {
        drivers.push("io_uring");
    }
    let mut expected = None;
    for driver in drivers {
        let gw = Gateway::start(&basic_config(&up.base_url(), &format!("workers = 1\ndriver = \"{driver}\"")));
        let mut c = gw.conn();
        let whole = answer(&send_cut(&mut c, &req, &[]));
        assert_eq!(whole.0, 200);
        let expected = expected.get_or_insert(whole.clone());
        assert_eq!(&whole, expected, "{driver} answers like the other driver");
        let mut sent = 0;
        // Two reads: cut at every byte of the head (and right after it).
        for i in 1..=head_len {
            let got = answer(&send_cut(&mut c, &req, &[i]));
            assert_eq!(&got, expected, "{driver}: head cut at byte {i}");
            sent += 1;
        }
        // Three reads: every first cut, the second 1, 7 and 40 bytes later.
        for i in 1..head_len {
            for d in [1, 7, 40] {
                let j = (i + d).min(req.len() - 1);
                let got = answer(&send_cut(&mut c, &req, &[i, j]));
                assert_eq!(&got, expected, "{driver}: head cut at bytes {i} and {j}");
                sent += 1;
            }
        }
        // All of it on one keep-alive connection: nothing leaked between requests.
        assert_eq!(sent, head_len + 3 * (head_len - 1));
    }
}
