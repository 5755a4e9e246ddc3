//! The protocol pieces of the transaction pool loop (native/src/pool_relay.rs), as pure functions
//! over bytes: messages the pool writes itself, the fields it reads, the server-side names of
//! prepared statements, and the query texts it must recognise (a transaction's start, LISTEN) —
//! each the twin of a piece of proxy/pool (client.ts, prepared.ts, backend-messages.ts).

use sha2::{Digest, Sha256};

/// client → server message types
pub mod t {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
}

pub const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];
pub const CLOSE_COMPLETE: &[u8] = &[b'3', 0, 0, 0, 4];
pub const TERMINATE_MSG: &[u8] = &[b'X', 0, 0, 0, 4];

pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + body.len());
    v.push(kind);
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// an ErrorResponse as proxy/protocol/backend-messages.ts errorResponse() builds it
pub fn error_response(severity: &str, code: &str, msg: &str, detail: Option<&str>, hint: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in [(b'S', Some(severity)), (b'V', Some(severity)), (b'C', Some(code)), (b'M', Some(msg)), (b'D', detail), (b'H', hint)] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            body.push(k);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    message(b'E', &body)
}

pub fn cstr_at(msg: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let end = msg.get(at..)?.iter().position(|&b| b == 0)? + at;
    Some((&msg[at..end], end + 1))
}

/// severity (non-localized V first), SQLSTATE and message of an ErrorResponse body
pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let (sev, code) = crate::relay::error_fields(body);
    let mut m = String::new();
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let end = body[i + 1..].iter().position(|&b| b == 0).map(|p| i + 1 + p).unwrap_or(body.len());
        if body[i] == b'M' {
            m = String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        }
        i = end + 1;
    }
    (sev, code, m)
}

/// the server-side name of a statement: one per distinct (query, parameter types), as prepared.ts names it
pub fn server_name(rest: &[u8]) -> String {
    let d = Sha256::digest(rest);
    let mut s = String::with_capacity(29);
    s.push_str("pgha_");
    for b in &d[..12] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn skip_space_and_comments(q: &[u8], mut i: usize) -> usize {
    loop {
        while i < q.len() && q[i].is_ascii_whitespace() || (i < q.len() && q[i] == 0x0b) {
            i += 1;
        }
        if q[i..].starts_with(b"--") {
            match q[i..].iter().position(|&b| b == b'\n') {
                Some(p) => i += p + 1,
                None => return i,
            }
        } else if q[i..].starts_with(b"/*") {
            match q[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i += 2 + p + 2,
                None => return i,
            }
        } else {
            return i;
        }
    }
}

/// a message at least this long is sent on as it arrives once its start is known (see streamable)
pub const STREAM_ABOVE: usize = 256 * 1024;
/// how much of such a message's start is read before it is sent on: enough for what is looked at
pub const STREAM_HEAD: usize = 16 * 1024;

/// The start `head` (type, length and at least part of the body) of a message too long to hold
/// whole: can it be sent on as it arrives? In session mode every message passes as it came; in
/// transaction mode a Query that is not LISTEN (its first word seen), a Bind of the unnamed
/// statement (whose statement name is not rewritten), and COPY data. A Parse (its whole text makes
/// the server-side name) or a Bind of a named statement is held whole, as before.
pub fn streamable(head: &[u8], session: bool) -> bool {
    if session {
        return true;
    }
    match head[0] {
        t::QUERY => {
            let q = &head[5..];
            let first = skip_space_and_comments(q, 0);
            // the first word must be in sight (a comment longer than the head: held whole)
            first + 6 < q.len() && !starts_with_listen(q)
        }
        t::BIND => cstr_at(head, 5).and_then(|(_, at)| cstr_at(head, at)).is_some_and(|(statement, _)| statement.is_empty()),
        b'd' => true,
        _ => false,
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// does the query text start with LISTEN (after white space and comments)? client.ts's LISTEN_RE
pub fn starts_with_listen(q: &[u8]) -> bool {
    let i = skip_space_and_comments(q, 0);
    q.len() >= i + 6 && q[i..i + 6].eq_ignore_ascii_case(b"LISTEN") && (q.len() == i + 6 || !is_word_byte(q[i + 6]))
}

/// is the query text only a transaction's start (BEGIN / START TRANSACTION with its modes)? client.ts's BEGIN_RE
pub fn is_begin(q: &[u8]) -> bool {
    let mut end = q.len();
    while end > 0 && q[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    if end > 0 && q[end - 1] == b';' {
        end -= 1;
        while end > 0 && q[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
    }
    let q = &q[..end];
    let mut i = 0;
    while i < q.len() && q[i].is_ascii_whitespace() {
        i += 1;
    }
    let kw = |i: usize, w: &[u8]| q.len() >= i + w.len() && q[i..i + w.len()].eq_ignore_ascii_case(w);
    if kw(i, b"BEGIN") {
        i += 5;
    } else if kw(i, b"START") {
        let mut j = i + 5;
        let ws = j;
        while j < q.len() && q[j].is_ascii_whitespace() {
            j += 1;
        }
        if j == ws || !kw(j, b"TRANSACTION") {
            return false;
        }
        i = j + 11;
    } else {
        return false;
    }
    const ITEMS: [&[u8]; 12] = [b"TRANSACTION", b"WORK", b"READ", b"WRITE", b"ONLY", b"COMMITTED", b"UNCOMMITTED", b"REPEATABLE", b"SERIALIZABLE", b"DEFERRABLE", b"NOT", b","];
    let item = |i: usize| -> Option<usize> {
        if kw(i, b"ISOLATION") {
            let mut j = i + 9;
            let ws = j;
            while j < q.len() && q[j].is_ascii_whitespace() {
                j += 1;
            }
            return (j > ws && kw(j, b"LEVEL")).then_some(j + 5);
        }
        ITEMS.iter().find(|w| kw(i, w)).map(|w| i + w.len())
    };
    while i < q.len() {
        let ws = i;
        while i < q.len() && q[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == ws {
            return false;
        }
        let Some(mut j) = item(i) else { return false };
        while let Some(k) = item(j) {
            j = k;
        }
        i = j;
    }
    true
}

pub fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

pub fn quote_ident(v: &str) -> String {
    let plain = !v.is_empty() && v.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('"', "\"\""))
    }
}

pub fn query_message(text: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(text.len() + 1);
    body.extend_from_slice(text.as_bytes());
    body.push(0);
    message(t::QUERY, &body)
}

/// SQL that makes the server itself raise the error (so aborting a transaction works as for any error)
pub fn not_supported(what: &str) -> String {
    let msg = format!("pgha-proxy: {what} is not supported in transaction pool mode (a server connection serves other clients between transactions): use --pool-mode session, or connect to the server directly");
    format!("DO $pgha$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = {}; END$pgha$", quote_literal(&msg))
}

/// does a server message of this type end the answer to a request of type `t`?
pub fn completes(kind: u8, t: u8) -> bool {
    match kind {
        b'1' => t == t::PARSE,
        b'2' => t == t::BIND,
        b'3' => t == t::CLOSE,
        b'n' | b'T' => t == t::DESCRIBE,
        b'C' | b'I' | b's' => t == t::EXECUTE,
        _ => false,
    }
}

/// the text of a Query message (its body without the terminating zero; empty for a malformed one)
pub fn query_text(msg: &[u8]) -> &[u8] {
    let end = msg.len().saturating_sub(1).max(5.min(msg.len()));
    &msg[5.min(msg.len())..end]
}

/// the whole length (type byte included) a message's header declares; `buf` holds at least the 5 header bytes
pub fn declared_length(buf: &[u8]) -> usize {
    1 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize
}

/// the length of the first whole message in `buf`, Ok(None) when it is not all there yet
pub fn whole_message(buf: &[u8], max: u32, offset_base: u64) -> Result<Option<usize>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as i64 > max as i64 {
        return Err(format!("client: invalid message length {} for message type 0x{:02x} at byte {} (expected 4..{})", len as u32, buf[0], offset_base, max));
    }
    let n = 1 + len as usize;
    Ok((buf.len() >= n).then_some(n))
}

/// the length of the whole server message at the start of `buf` (None: not all of it yet); Err
/// names the bad length word (`node`: the server's name)
pub fn server_message(buf: &[u8], node: &str) -> Result<Option<usize>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(format!("server {node}: invalid message length {} for message type 0x{:02x}", len as u32, buf[0]));
    }
    let n = 1 + len as usize;
    Ok((buf.len() >= n).then_some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn begin_is_recognised_as_client_ts_does() {
        for q in ["BEGIN", "begin;", "  BEGIN  ;  ", "BEGIN TRANSACTION", "BEGIN WORK", "START TRANSACTION", "start  transaction isolation level serializable", "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", "BEGIN READ WRITE", "BEGIN NOT DEFERRABLE", "BEGIN ISOLATION LEVEL READ COMMITTED"] {
            assert!(is_begin(q.as_bytes()), "{q}");
        }
        for q in ["BEGIN; SELECT 1", "BEGINX", "START", "STARTTRANSACTION", "SELECT 1", "BEGIN ISOLATION", "BEGIN, READ ONLY", "COMMIT", "", "BEGIN READ ONLY; INSERT"] {
            assert!(!is_begin(q.as_bytes()), "{q}");
        }
    }

    #[test]
    fn listen_after_space_and_comments() {
        for q in ["LISTEN x", "listen x", "  -- c\n LISTEN x", "/* a */ listen \"x\"", "LISTEN"] {
            assert!(starts_with_listen(q.as_bytes()), "{q}");
        }
        for q in ["LISTENING", "SELECT 1; LISTEN x", "-- LISTEN x", "/* LISTEN */ SELECT", "UNLISTEN x"] {
            assert!(!starts_with_listen(q.as_bytes()), "{q}");
        }
    }

    #[test]
    fn server_names_are_prepared_ts_names() {
        // prepared.ts: `pgha_` + the first 24 hex digits of SHA-256 over the query and parameter types
        assert_eq!(server_name(b"select 1\0\0\0"), format!("pgha_{}", &hex(&Sha256::digest(b"select 1\0\0\0"))[..24]));
        assert_eq!(server_name(b"a\0\0\0").len(), 29);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn query_text_of_short_and_empty_queries() {
        assert_eq!(query_text(&message(t::QUERY, b"BEGIN\0")), b"BEGIN");
        assert_eq!(query_text(&message(t::QUERY, b"\0")), b"");
        assert_eq!(query_text(&message(t::QUERY, b"")), b"");
    }

    #[test]
    fn error_response_as_backend_messages_ts() {
        let e = error_response("FATAL", "57P01", "bye", None, Some("retry"));
        assert_eq!(&e[5..], b"SFATAL\0VFATAL\0C57P01\0Mbye\0Hretry\0\0");
        assert_eq!(i32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize, e.len() - 1);
    }
}
