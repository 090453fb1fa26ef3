//! A small pipelined RESP2 client for one Redis server (after mini-redis's `Connection`), used
//! by the Redis store for its per-batch round trips on a plain `redis://` server.
//!
//! Why not redis-rs for these: a batch is thousands of commands whose replies are sorted-set
//! members; redis-rs builds a `Cmd` per command (an allocation per argument), encodes it, and
//! parses replies into a `Value` tree with a combinator parser before the store copies them
//! out again — about a third of the worker's CPU in `perf` (session 7). Here a batch's commands
//! are written straight into one buffer and replies are parsed in place, handing the store
//! borrowed slices ([`Reply`]).
//!
//! Connections are pooled (one per concurrent batch) and taken out of the pool for a whole
//! round trip: a round trip that fails, or is abandoned at the store deadline (its future
//! dropped), drops its connection, so a half-read reply stream is never reused. The next round
//! trip connects again; while Redis is down that fails fast and the batch is scored degraded.
//! TLS (`rediss://`), Unix sockets and Redis Cluster keep using redis-rs.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::StoreError;

/// One reply, borrowing the read buffer.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    /// `None`: the null bulk string (e.g. an absent `HMGET` field).
    Bulk(Option<&'a [u8]>),
    /// `None`: the null array.
    Array(Option<Vec<Reply<'a>>>),
}

/// A protocol violation (the connection is dropped).
fn bad(what: &str) -> StoreError {
    StoreError::BadReply(format!("RESP: {what}"))
}

/// Parses one reply at the start of `buf`: `Ok(None)` if it is not complete yet, else the reply
/// and the bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, StoreError> {
    let Some(line_end) = find_crlf(buf) else {
        return Ok(None);
    };
    let (tag, line) = (buf[0], &buf[1..line_end]);
    let after = line_end + 2;
    match tag {
        b'+' => Ok(Some((Reply::Simple(line), after))),
        b'-' => Ok(Some((Reply::Error(line), after))),
        b':' => Ok(Some((Reply::Int(int(line)?), after))),
        b'$' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let end = after + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(bad("bulk string not terminated"));
            }
            Ok(Some((Reply::Bulk(Some(&buf[after..end])), end + 2)))
        }
        b'*' => {
            let n = int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::with_capacity((n as usize).min(1 << 16));
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(bad(&format!("unexpected type byte {other:#04x}"))),
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\r') {
        let at = from + i;
        if at + 1 >= buf.len() {
            return None;
        }
        if buf[at + 1] == b'\n' {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn int(line: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad integer"))
}

/// Writes commands in RESP into one buffer.
#[derive(Default)]
pub(crate) struct Request {
    pub(crate) buf: Vec<u8>,
    /// Commands written (= replies expected).
    pub(crate) commands: usize,
}

impl Request {
    /// Starts a command of `args` arguments (its name included).
    pub(crate) fn command(&mut self, args: usize) -> &mut Self {
        self.commands += 1;
        self.buf.push(b'*');
        self.number(args as i64);
        self
    }
    pub(crate) fn arg(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.push(b'$');
        self.number(bytes.len() as i64);
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
        self
    }
    pub(crate) fn int_arg(&mut self, v: i64) -> &mut Self {
        let mut digits = [0u8; 20];
        let s = format_int(v, &mut digits);
        self.buf.push(b'$');
        self.number(s.len() as i64);
        self.buf.extend_from_slice(s);
        self.buf.extend_from_slice(b"\r\n");
        self
    }
    fn number(&mut self, v: i64) {
        let mut digits = [0u8; 20];
        let s = format_int(v, &mut digits);
        self.buf.extend_from_slice(s);
        self.buf.extend_from_slice(b"\r\n");
    }
}

/// `v` in decimal, in `out`.
fn format_int(v: i64, out: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        out[i] = b'-';
    }
    &out[i..]
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
}

impl Target {
    /// The target of a plain `redis://` URL; `None` for what this client does not speak (TLS,
    /// Unix sockets, cluster URLs), which stays with redis-rs.
    pub(crate) fn of_url(url: &str) -> Option<Target> {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        if !url.starts_with("redis://") {
            return None;
        }
        let info = url.into_connection_info().ok()?;
        match info.addr {
            ConnectionAddr::Tcp(host, port) => Some(Target {
                addr: format!("{host}:{port}"),
                username: info.redis.username,
                password: info.redis.password,
                db: info.redis.db,
            }),
            _ => None,
        }
    }
}

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Pooled connections to one server.
pub(crate) struct Pool {
    target: Target,
    io_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

/// Connections kept idle at most (one per batch in flight is what the worker needs).
const MAX_IDLE: usize = 8;

impl Pool {
    pub(crate) fn new(target: Target, io_timeout: Duration) -> Pool {
        Pool {
            target,
            io_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` and hands each reply, in order, to `on_reply` (with its index); an error
    /// reply, a protocol violation, an I/O error or `on_reply` failing fails the round trip and
    /// drops the connection (it goes back to the pool only after a clean round trip).
    pub(crate) async fn round_trip(
        &self,
        request: &Request,
        mut on_reply: impl FnMut(usize, Reply<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let idle = self.idle.lock().expect("pool lock").pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        conn.stream
            .write_all(&request.buf)
            .await
            .map_err(io_error)?;
        read_replies(&mut conn, request.commands, &mut on_reply).await?;
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        let stream = tokio::time::timeout(self.io_timeout, TcpStream::connect(&self.target.addr))
            .await
            .map_err(|_| StoreError::Timeout(self.io_timeout))?
            .map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        };
        let mut hello = Request::default();
        if let Some(password) = &self.target.password {
            match &self.target.username {
                Some(user) => hello.command(3).arg(b"AUTH").arg(user.as_bytes()),
                None => hello.command(2).arg(b"AUTH"),
            }
            .arg(password.as_bytes());
        }
        if self.target.db != 0 {
            hello.command(2).arg(b"SELECT").int_arg(self.target.db);
        }
        if hello.commands > 0 {
            conn.stream.write_all(&hello.buf).await.map_err(io_error)?;
            read_replies(&mut conn, hello.commands, &mut |_, _| Ok(())).await?;
        }
        Ok(conn)
    }
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Reads `n` replies and hands each to `on_reply`. The first error (an error reply, a protocol
/// violation, `on_reply` failing) ends the round trip at once: the caller then drops the
/// connection, so the replies left unread are never mistaken for the next batch's.
async fn read_replies(
    conn: &mut Connection,
    n: usize,
    on_reply: &mut impl FnMut(usize, Reply<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    conn.buf.clear();
    let mut done = 0;
    let mut start = 0;
    loop {
        while done < n {
            let Some((reply, used)) = parse(&conn.buf[start..])? else {
                break;
            };
            if let Reply::Error(e) = reply {
                return Err(StoreError::BadReply(
                    String::from_utf8_lossy(e).into_owned(),
                ));
            }
            on_reply(done, reply)?;
            start += used;
            done += 1;
        }
        if done == n {
            break;
        }
        if start > 0 {
            conn.buf.drain(..start);
            start = 0;
        }
        conn.buf.reserve(64 * 1024);
        let read = conn
            .stream
            .read_buf(&mut conn.buf)
            .await
            .map_err(io_error)?;
        if read == 0 {
            return Err(StoreError::Io("connection closed by the server".into()));
        }
    }
    if start != conn.buf.len() {
        return Err(bad("more data than replies"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_type_parses_and_an_incomplete_one_waits() {
        let wire: &[u8] =
            b"+OK\r\n-ERR no\r\n:-42\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n*3\r\n$1\r\nx\r\n:7\r\n*1\r\n$0\r\n\r\n";
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((r, used)) = parse(&wire[at..]).unwrap() {
            got.push(format!("{r:?}"));
            at += used;
        }
        assert_eq!(at, wire.len());
        assert_eq!(
            got,
            vec![
                "Simple([79, 75])",
                "Error([69, 82, 82, 32, 110, 111])",
                "Int(-42)",
                "Bulk(Some([97, 13, 10]))", // a bulk string may contain CRLF
                "Bulk(None)",
                "Array(None)",
                "Array(Some([Bulk(Some([120])), Int(7), Array(Some([Bulk(Some([]))]))]))",
            ]
        );
        // Every strict prefix of a reply is incomplete, never an error or a wrong reply.
        let array = b"*2\r\n$5\r\nhello\r\n:12\r\n";
        for cut in 0..array.len() {
            assert_eq!(parse(&array[..cut]).unwrap(), None, "prefix of {cut} bytes");
        }
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b"$2\r\nabcd\r\n").is_err());
    }

    #[test]
    fn commands_are_written_in_resp() {
        let mut r = Request::default();
        r.command(3).arg(b"ZRANGE").arg(b"k").int_arg(-1);
        r.command(1).arg(b"PING");
        assert_eq!(r.commands, 2);
        assert_eq!(
            r.buf,
            b"*3\r\n$6\r\nZRANGE\r\n$1\r\nk\r\n$2\r\n-1\r\n*1\r\n$4\r\nPING\r\n".to_vec()
        );
        let mut d = [0u8; 20];
        for v in [0, 7, -7, 1234567890123, i64::MIN, i64::MAX] {
            assert_eq!(format_int(v, &mut d), v.to_string().as_bytes());
        }
    }

    #[test]
    fn plain_urls_are_ours_and_the_rest_stays_with_redis_rs() {
        let t = Target::of_url("redis://:s3cret@127.0.0.1:6390/2").unwrap();
        assert_eq!(t.addr, "127.0.0.1:6390");
        assert_eq!(t.password.as_deref(), Some("s3cret"));
        assert_eq!(t.db, 2);
        assert!(Target::of_url("rediss://h:1/").is_none());
        assert!(Target::of_url("redis+cluster://h:1,h:2").is_none());
    }
}
