//! Allocation-free number formatting into byte buffers.

/// Append `n` in decimal.
pub fn push_dec(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Append `n` in lowercase hex (chunk sizes).
pub fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Append one chunk of chunked transfer-encoding.
pub fn push_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    push_hex(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        for n in [0u64, 7, 10, 255, 4096, u64::MAX] {
            let mut d = Vec::new();
            push_dec(&mut d, n);
            assert_eq!(String::from_utf8(d).unwrap(), n.to_string());
            let mut h = Vec::new();
            push_hex(&mut h, n);
            assert_eq!(String::from_utf8(h).unwrap(), format!("{n:x}"));
        }
        let mut c = Vec::new();
        push_chunk(&mut c, b"hello");
        push_chunk(&mut c, b"");
        assert_eq!(c, b"5\r\nhello\r\n");
    }
}
