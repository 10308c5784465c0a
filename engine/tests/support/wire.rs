//! A TCP proxy that loses an answer on the wire: it forwards every byte
//! between a client and one server until it sees, in the client's bytes, the
//! request (a read or a put of a key prefix) it was armed with. From then on, that
//! connection's answers are dropped, and after [`CUT_AFTER`] the connection
//! is closed in both directions. The request reached the server whole; its
//! answer never reaches the client.
//!
//! etcd's client speaks gRPC over HTTP/2 without compression, so a
//! transaction crosses the wire as its protobuf encoding: a put of key `k`
//! is the bytes `0x12 len 0x0a len k…` (`RequestOp.request_put`, field 2,
//! holding `PutRequest.key`, field 1), where a read of the same key is
//! `0x0a len 0x0a len k…` (`request_range`, field 1). [`carries`] tells
//! them apart. Threads of std only; the proxy stops when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long a cut connection stays open, dropping answers, before it is
/// closed: long enough for a member on loopback to apply the request
/// (milliseconds), so the request is applied and only its answer lost.
pub(crate) const CUT_AFTER: Duration = Duration::from_millis(500);

/// One proxy in front of each of a cluster's servers, armed together: one
/// arming cuts one connection, whichever server the request goes to, so a
/// request the client sends again to the next server gets through.
pub(crate) struct WireProxies {
    /// `http://127.0.0.1:port` of each proxy, in the servers' order, to
    /// give the client instead of the servers'.
    pub(crate) urls: Vec<String>,
    shared: Arc<Shared>,
    addresses: Vec<SocketAddr>,
}

struct Shared {
    /// The request (and key prefix) that cuts the next connection it
    /// crosses; taken by the connection that sees it, so one arming cuts
    /// one connection.
    armed: Mutex<Option<(Request, Vec<u8>)>>,
    /// How many times the proxies were armed: a connection forgets the
    /// bytes it saw before the latest arming.
    armings: AtomicUsize,
    cuts: AtomicUsize,
    stopping: AtomicBool,
}

impl WireProxies {
    /// A proxy on a free loopback port for each of `servers`
    /// (`http://host:port`).
    pub(crate) fn start(servers: &[String]) -> WireProxies {
        use std::net::ToSocketAddrs as _;
        let shared = Arc::new(Shared {
            armed: Mutex::new(None),
            armings: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let mut urls = Vec::new();
        let mut addresses = Vec::new();
        for server in servers {
            let upstream = server
                .trim_start_matches("http://")
                .to_socket_addrs()
                .expect("the server's address")
                .next()
                .expect("the server's address");
            let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            let address = listener.local_addr().expect("the proxy's address");
            let accepting = Arc::clone(&shared);
            thread::spawn(move || {
                for client in listener.incoming() {
                    if accepting.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let shared = Arc::clone(&accepting);
                    thread::spawn(move || serve(client, upstream, &shared));
                }
            });
            urls.push(format!("http://{address}"));
            addresses.push(address);
        }
        WireProxies {
            urls,
            shared,
            addresses,
        }
    }

    /// Cuts the first connection whose client sends `request` of a key
    /// that starts with `key_prefix`, from now on.
    pub(crate) fn arm(&self, request: Request, key_prefix: &[u8]) {
        let mut armed = self.shared.armed.lock().expect("proxy lock");
        *armed = Some((request, key_prefix.to_vec()));
        self.shared.armings.fetch_add(1, Ordering::SeqCst);
    }

    /// Withdraws an arming that no request matched.
    pub(crate) fn disarm(&self) {
        *self.shared.armed.lock().expect("proxy lock") = None;
    }

    /// How many connections were cut so far.
    pub(crate) fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for WireProxies {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accepting threads so they see `stopping`.
        for address in &self.addresses {
            let _ = TcpStream::connect(address);
        }
    }
}

/// Forwards one connection until either side closes it, or until it is cut.
fn serve(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut = Arc::new(AtomicBool::new(false));
    let (Ok(client_reader), Ok(server_writer)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Answers: forwarded until the connection is cut, then dropped.
    let answers_cut = Arc::clone(&cut);
    let answers = thread::spawn(move || {
        pump(server, client, |_| !answers_cut.load(Ordering::SeqCst));
    });
    // Requests: always forwarded whole; the one carrying the armed put
    // marks the connection cut before it is forwarded, so its answer is
    // dropped, and closes the connection a while later.
    let mut window: Vec<u8> = Vec::new();
    let mut armings_seen = 0;
    let requests_shared = Arc::clone(shared);
    let closer = (client_reader.try_clone(), server_writer.try_clone());
    pump(client_reader, server_writer, move |bytes| {
        let mut armed = requests_shared.armed.lock().expect("proxy lock");
        // Only puts sent after the arming count.
        let armings = requests_shared.armings.load(Ordering::SeqCst);
        if armings != armings_seen {
            armings_seen = armings;
            window.clear();
        }
        window.extend_from_slice(bytes);
        if let Some((request, prefix)) = armed.as_ref()
            && !cut.load(Ordering::SeqCst)
            && carries(&window, *request, prefix)
        {
            *armed = None;
            cut.store(true, Ordering::SeqCst);
            requests_shared.cuts.fetch_add(1, Ordering::SeqCst);
            if let (Ok(client), Ok(server)) = (&closer.0, &closer.1) {
                let (client, server) = (client.try_clone(), server.try_clone());
                thread::spawn(move || {
                    thread::sleep(CUT_AFTER);
                    for stream in [client, server].into_iter().flatten() {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                });
            }
        }
        // Keep what a put split across two reads needs.
        let drop_to = window.len().saturating_sub(WINDOW_KEPT);
        window.drain(..drop_to);
        true
    });
    let _ = answers.join();
}

/// The bytes of a connection kept between reads, for a put whose encoding
/// two reads split.
const WINDOW_KEPT: usize = 4096;

/// A request the proxy can pick out, by the tag of its `RequestOp` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// A read (`request_range`, field 1) in a transaction.
    Read,
    /// A put (`request_put`, field 2) in a transaction.
    Put,
}

/// Whether `bytes` hold `request` (in a transaction) of a key starting with
/// `prefix`: before the prefix, the key's length and the tag of the key
/// field (0x0a: field 1 of both `RangeRequest` and `PutRequest`), and
/// before those the request's length and its `RequestOp` tag (0x0a for a
/// read, 0x12 for a put). A guard's compare names its key as field 3.
fn carries(bytes: &[u8], request: Request, prefix: &[u8]) -> bool {
    let op = match request {
        Request::Read => 0x0a,
        Request::Put => 0x12,
    };
    /// The index of the tag before the varint that ends at `end - 1`.
    fn tag_before_varint(bytes: &[u8], end: usize) -> Option<usize> {
        let last = end.checked_sub(1)?;
        if bytes[last] >= 0x80 {
            return None;
        }
        let mut at = last.checked_sub(1)?;
        while bytes[at] >= 0x80 {
            at = at.checked_sub(1)?;
        }
        Some(at)
    }
    if prefix.is_empty() || bytes.len() < prefix.len() {
        return false;
    }
    (0..=bytes.len() - prefix.len())
        .filter(|&at| &bytes[at..at + prefix.len()] == prefix)
        .any(|at| {
            tag_before_varint(bytes, at)
                .filter(|&key_tag| bytes[key_tag] == 0x0a)
                .and_then(|key_tag| tag_before_varint(bytes, key_tag))
                .is_some_and(|op_tag| bytes[op_tag] == op)
        })
}

/// Copies `from` to `to` until either closes; `forward` sees each read and
/// says whether to pass it on (false: dropped).
fn pump(mut from: TcpStream, mut to: TcpStream, mut forward: impl FnMut(&[u8]) -> bool) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if forward(&buffer[..n]) && to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[test]
fn a_put_is_told_from_a_read_of_the_same_key() {
    let is_put_of = |bytes: &[u8], prefix: &[u8]| carries(bytes, Request::Put, prefix);
    let is_read_of = |bytes: &[u8], prefix: &[u8]| carries(bytes, Request::Read, prefix);
    let key = b"ns/data\0k";
    let len = u8::try_from(key.len()).expect("a short key");
    // RequestOp { request_put: PutRequest { key, value: 200 bytes } }
    let mut put = vec![0x12, 0xd5, 0x01, 0x0a, len];
    put.extend_from_slice(key);
    put.extend_from_slice(&[0x12, 0xc8, 0x01]);
    put.extend_from_slice(&[7; 200]);
    assert!(is_put_of(&put, b"ns/data\0"));
    assert!(!is_put_of(&put, b"ns/meta\0"));
    // RequestOp { request_range: RangeRequest { key } }
    let mut read = vec![0x0a, len + 2, 0x0a, len];
    read.extend_from_slice(key);
    assert!(!is_put_of(&read, b"ns/data\0"));
    assert!(is_read_of(&read, b"ns/data\0"));
    assert!(!is_read_of(&put, b"ns/data\0"));
    // The compare of a guard names its key as field 3.
    let mut compare = vec![0x0a, 0x10, 0x1a, len];
    compare.extend_from_slice(key);
    assert!(!is_put_of(&compare, b"ns/data\0"));
    assert!(!is_read_of(&compare, b"ns/data\0"));
}
