//! A blocking RESP client on one connection (plain or rustls), for the
//! health probe and the admin's re-seeding — threads of their own, never a
//! worker. Commands may be pipelined: [`SyncConn::pipeline`].

use super::Cluster;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
pub use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame as Frame};
use std::io::{Read, Write};
use std::net::TcpStream;
use switchboard_shared::limits::CLUSTER_MAX_REPLY_BYTES;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct SyncConn {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
}

/// Append one command (an array of bulk strings) to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) -> Result<(), String> {
    let frames: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&frames);
    let at = out.len();
    out.resize(at + frame.encode_len(false), 0);
    encode_borrowed(&mut out[at..], &frame, false).map_err(|e| format!("cannot encode a Redis command: {e}"))?;
    Ok(())
}

impl SyncConn {
    /// Connect (and authenticate) with the cluster's timeouts.
    pub fn connect(c: &Cluster) -> Result<SyncConn, String> {
        let addr = c.addr().ok_or_else(|| format!("cannot resolve {}", c.endpoint.host))?;
        let tcp = TcpStream::connect_timeout(&addr, c.connect_timeout()).map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_read_timeout(Some(c.command_timeout())).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(c.command_timeout())).map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let s: Box<dyn Stream> = match &c.tls {
            None => Box::new(tcp),
            Some((cfg, name)) => {
                let conn = rustls::ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| e.to_string())?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        let mut conn = SyncConn { s, buf: Vec::with_capacity(4096) };
        if let Some((user, pass)) = &c.auth {
            let user = user.as_deref().unwrap_or("default");
            let r = conn.call(&[b"AUTH", user.as_bytes(), pass.expose().as_bytes()])?;
            if let Frame::Error(e) = r {
                return Err(format!("Redis refused the credentials: {}", e.split_whitespace().next().unwrap_or("")));
            }
        }
        Ok(conn)
    }

    /// One command; a Redis error reply is returned as `Frame::Error`.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Frame, String> {
        let mut out = Vec::new();
        encode_command(&mut out, args)?;
        self.s.write_all(&out).map_err(|e| format!("send: {e}"))?;
        self.read_frame()
    }

    /// Several commands in one write; their replies in order.
    pub fn pipeline(&mut self, commands: &[Vec<&[u8]>]) -> Result<Vec<Frame>, String> {
        let mut out = Vec::new();
        for c in commands {
            encode_command(&mut out, c)?;
        }
        self.s.write_all(&out).map_err(|e| format!("send: {e}"))?;
        (0..commands.len()).map(|_| self.read_frame()).collect()
    }

    fn read_frame(&mut self) -> Result<Frame, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("Redis sent a malformed reply: {e:?}")),
            }
            if self.buf.len() > CLUSTER_MAX_REPLY_BYTES {
                return Err("the Redis reply is too large".into());
            }
            let n = self.s.read(&mut chunk).map_err(|e| format!("receive: {e}"))?;
            if n == 0 {
                return Err("Redis closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
