//! Where git fetches may connect: the egress policy (public addresses only, unless the
//! operator allows a network) and the in-process CONNECT proxy every https fetch goes
//! through, so each connection libgit2 opens (redirects included) is checked when it opens.
//!
//! Why a proxy: checking a host name before the fetch and letting libgit2 resolve it again
//! is a race a DNS server can win (rebinding), and a redirect from an allowed host could
//! lead anywhere. libgit2 sends `CONNECT host:port` to a configured proxy for every https
//! connection (`transports/httpclient.c`, `use_connect_proxy`) and then speaks TLS to the
//! origin through the tunnel; the proxy resolves the name itself, checks every address,
//! and connects only to a checked one.
//!
//! Certificates: libgit2 (1.9, `http_client_connect`) frees the proxy's stream before
//! closing the TLS stream over it when a certificate is refused, and that close writes
//! TLS's close_notify through the freed stream: a use-after-free that leaves the fetch
//! thread blocked for good or writes into another descriptor, reachable by any https
//! server with a certificate that does not verify. So libgit2 never refuses one here:
//! before opening a tunnel the proxy verifies the origin in a TLS handshake of its own
//! (`tls::OriginVerifier`), refusing the CONNECT when it fails (libgit2 then fails before
//! any TLS, safely); libgit2's certificate callback verifies the leaf it received again
//! with that handshake's intermediates (`ConnectProxy::accept_certificate`) and always
//! answers "accepted", after cutting every tunnel when the leaf fails, so nothing more
//! reaches the server and the fetch fails on a closed connection, a path libgit2 cleans
//! up in the right order. Left open: a server that shows the proxy a valid certificate
//! and libgit2 another that chains to a trusted root but names no host of the URL's kind
//! and has no CN (an IP-address certificate for a host name) fails inside libgit2's
//! connect, before the callback, on the same error path; only a libgit2 that closes the
//! TLS stream before the proxy's stream closes it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::{AllowedNetwork, GitConfig};

use crate::tls::{OriginVerifier, ServerChain};

/// The largest CONNECT request head read; libgit2's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Which addresses a git fetch may connect to. Invariant: an address is permitted when it
/// lies in a network the operator allowed, or when it is a public unicast address that is
/// not one of this machine's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allowed: Vec<AllowedNetwork>,
}

impl EgressPolicy {
    pub fn new(allowed: &[AllowedNetwork]) -> Self {
        Self {
            allowed: allowed.to_vec(),
        }
    }

    /// The policy of the `[git]` section: its `allowed_networks` besides public addresses.
    pub fn from_config(git: &GitConfig) -> Self {
        Self::new(&git.allowed_networks)
    }

    /// The addresses of `host:port` this policy permits, resolved by the daemon itself (a
    /// literal address is taken as is). Empty when the name does not resolve or resolves
    /// only to refused addresses. Blocking: async callers use `permitted_addresses_of`.
    pub fn permitted_addresses(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        permitted_addresses(&(host.to_owned(), port), self)
    }

    /// `permitted_addresses` resolving on tokio's resolver, for async callers.
    pub async fn permitted_addresses_of(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        resolve(host, port)
            .await
            .into_iter()
            .filter(|address| self.permits(address.ip()))
            .collect()
    }
}

/// Every address of `host:port` (a literal address as is, brackets allowed), on tokio's
/// resolver; empty when the name does not resolve.
pub async fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map(Iterator::collect)
            .unwrap_or_default(),
    }
}

impl EgressPolicy {
    pub fn permits(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        if self.allowed.iter().any(|net| net.contains(address)) {
            return true;
        }
        !is_internal(address) && !is_own_address(address)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address it carries, so the
/// operator's IPv4 networks and the IPv4 ranges apply to it.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        IpAddr::V4(_) => address,
    }
}

/// Ranges that never lead to a public git host: loopback, private (RFC 1918), shared
/// (CGNAT), link-local (cloud metadata lives there), unspecified, multicast, broadcast,
/// reserved and documentation ranges, and their IPv6 counterparts. IPv6 forms that embed
/// an IPv4 address (NAT64, 6to4) are judged by that address.
fn is_internal(address: IpAddr) -> bool {
    const V4: &[(Ipv4Addr, u8)] = &[
        (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
        (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
        (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (CGNAT)
        (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
        (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata
        (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
        (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
        (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation
        (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast
        (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
        (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
        (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
        (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation
        (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
        (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, broadcast
    ];
    const V6: &[(Ipv6Addr, u8)] = &[
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96), // unspecified, loopback, IPv4-compatible
        (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
        (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments, Teredo
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
        (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
    ];
    match address {
        IpAddr::V4(v4) => V4.iter().any(|(net, len)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
            u32::from(v4) & mask == u32::from(*net) & mask
        }),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_internal(IpAddr::V4(v4));
            }
            V6.iter().any(|(net, len)| {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                u128::from(v6) & mask == u128::from(*net) & mask
            })
        }
    }
}

/// The IPv4 address a NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address leads to.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    if bits >> 32 == u128::from(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)) >> 32 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if v6.segments()[0] == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// True for an address of one of this machine's interfaces: a public address of the
/// server reaches the daemon's own listeners (the edge, maybe the API) from outside
/// loopback. Read at each check, so an address added later counts too. If the interfaces
/// cannot be listed, every address counts as the machine's own: refusing is the safe side.
fn is_own_address(address: IpAddr) -> bool {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .iter()
            .any(|interface| canonical(interface.ip()) == address),
        Err(_) => true,
    }
}

/// Why the proxy did not open a tunnel: what the fetch reports instead of libgit2's
/// "proxy returned unexpected status".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyRefusal {
    /// No address of the host is permitted (or the name does not resolve): nothing was
    /// contacted, so nothing about what listens there can show.
    NotPermitted,
    /// A permitted address did not accept the connection.
    ConnectFailed(String),
    /// The origin's certificate did not verify (in the proxy's own handshake, or the leaf
    /// libgit2 received): the reason.
    Untrusted(String),
}

/// A CONNECT proxy on a loopback port for the duration of one fetch. Dropping it stops
/// accepting; open tunnels end when libgit2 closes them or the deadline passes.
pub(crate) struct ConnectProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    policy: EgressPolicy,
    deadline: Instant,
    stopped: AtomicBool,
    /// The last refusal, read by the fetch to explain its failure.
    refusal: Mutex<Option<ProxyRefusal>>,
    verifier: OriginVerifier,
    /// Each host's chain as the proxy's own handshake verified it, by `host_key`.
    chains: Mutex<HashMap<String, ServerChain>>,
    /// The origin side of every tunnel opened, so that a refused leaf cuts them all.
    tunnels: Mutex<Vec<TcpStream>>,
    /// Set once a leaf was refused: later CONNECTs of the fetch are refused at once.
    untrusted: AtomicBool,
}

impl ConnectProxy {
    pub(crate) fn start(
        policy: EgressPolicy,
        deadline: Instant,
        verifier: OriginVerifier,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            policy,
            deadline,
            stopped: AtomicBool::new(false),
            refusal: Mutex::new(None),
            verifier,
            chains: Mutex::new(HashMap::new()),
            tunnels: Mutex::new(Vec::new()),
            untrusted: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("cantila-git-proxy".into())
            .spawn(move || accept_loop(&listener, &accepting))?;
        Ok(Self {
            address,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The proxy URL handed to libgit2.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub(crate) fn refusal(&self) -> Option<ProxyRefusal> {
        lock(&self.shared.refusal).clone()
    }

    /// Whether `leaf` (DER), which libgit2 received for `host` through a tunnel, is
    /// trusted: verified with the intermediates of the proxy's own handshake with `host`.
    /// When it is not, every tunnel is cut before this returns, so nothing libgit2 sends
    /// afterwards reaches the server, and the reason is kept for the fetch's error.
    pub(crate) fn accept_certificate(&self, leaf: &[u8], host: &str) -> bool {
        let shared = &self.shared;
        let chain = lock(&shared.chains).get(&host_key(host)).cloned();
        let verdict = match chain {
            Some(chain) => shared.verifier.verify_leaf(leaf, &chain, host),
            None => Err(format!(
                "the certificate of {host} came over a connection the proxy did not verify"
            )),
        };
        let Err(why) = verdict else {
            return true;
        };
        shared.untrusted.store(true, Ordering::SeqCst);
        *lock(&shared.refusal) = Some(ProxyRefusal::Untrusted(why));
        for tunnel in lock(&shared.tunnels).iter() {
            let _ = tunnel.shutdown(Shutdown::Both);
        }
        false
    }
}

/// The key of a host in `Shared::chains`: libgit2's callback and the CONNECT line may
/// differ in case and in the brackets of an IPv6 address.
fn host_key(host: &str) -> String {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
        .to_ascii_lowercase()
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // A connection of our own wakes the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("cantila-git-tunnel".into())
            .spawn(move || {
                if let Err(error) = serve_client(stream, &shared) {
                    tracing::debug!(%error, "git proxy connection ended");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a git proxy thread");
        }
    }
}

/// Answers one CONNECT: checks the target, opens the tunnel, and copies bytes both ways.
fn serve_client(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    let Some(remaining) = shared.deadline.checked_duration_since(Instant::now()) else {
        return Ok(());
    };
    client.set_read_timeout(Some(remaining))?;
    client.set_write_timeout(Some(remaining))?;
    let (head, early) = read_head(&mut client)?;
    let Some(target) = connect_target(&head) else {
        client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    let permitted = permitted_addresses(&target, &shared.policy);
    if permitted.is_empty() {
        // Debug, not info: any tenant can ask for fetches, so this must not flood the log.
        tracing::debug!(target = %target.0, "refused a git fetch: the host has no public address");
        *lock(&shared.refusal) = Some(ProxyRefusal::NotPermitted);
        client.write_all(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    if shared.untrusted.load(Ordering::SeqCst) {
        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    let mut last_error = None;
    let mut upstream = None;
    for address in permitted {
        // The origin's certificate first, in a handshake of the proxy's own (see the
        // module's comment), then the tunnel's connection to the same address.
        let probe = match connect_before(&address, shared.deadline) {
            Ok(stream) => stream,
            Err(error) => {
                last_error = Some(error);
                continue;
            }
        };
        match shared.verifier.handshake(probe, &target.0) {
            Ok(chain) => {
                lock(&shared.chains).insert(host_key(&target.0), chain);
            }
            // Past the deadline the fetch reports its timeout, not this.
            Err(_) if Instant::now() >= shared.deadline => break,
            Err(why) => {
                tracing::debug!(target = %target.0, reason = %why, "refused a git fetch: the certificate did not verify");
                *lock(&shared.refusal) = Some(ProxyRefusal::Untrusted(why));
                client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
        }
        match connect_before(&address, shared.deadline) {
            Ok(stream) => {
                upstream = Some(stream);
                break;
            }
            Err(error) => last_error = Some(error),
        }
    }
    let Some(mut upstream) = upstream else {
        let why = last_error.map_or_else(|| "the deadline passed".to_owned(), |e| e.to_string());
        *lock(&shared.refusal) = Some(ProxyRefusal::ConnectFailed(why.to_lowercase()));
        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    let remaining = shared
        .deadline
        .checked_duration_since(Instant::now())
        .unwrap_or_default()
        .max(std::time::Duration::from_millis(1));
    upstream.set_read_timeout(Some(remaining))?;
    upstream.set_write_timeout(Some(remaining))?;
    // Registered before the client may speak TLS through it, so a refused leaf cuts it.
    lock(&shared.tunnels).push(upstream.try_clone()?);
    client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
    upstream.write_all(&early)?;
    let mut upstream_reader = upstream.try_clone()?;
    let mut client_writer = client.try_clone()?;
    let downstream = std::thread::Builder::new()
        .name("cantila-git-tunnel".into())
        .spawn(move || {
            let _ = io::copy(&mut upstream_reader, &mut client_writer);
            let _ = client_writer.shutdown(Shutdown::Write);
        })?;
    let _ = io::copy(&mut client, &mut upstream);
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = downstream.join();
    Ok(())
}

/// A connection to `address` opened before `deadline`, with the time left as its read and
/// write timeouts.
fn connect_before(address: &SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
        return Err(io::ErrorKind::TimedOut.into());
    };
    let stream = TcpStream::connect_timeout(address, remaining)?;
    let remaining = deadline
        .checked_duration_since(Instant::now())
        .unwrap_or_default()
        .max(std::time::Duration::from_millis(1));
    stream.set_read_timeout(Some(remaining))?;
    stream.set_write_timeout(Some(remaining))?;
    Ok(stream)
}

/// Reads up to the blank line ending the request head; returns the head and any bytes
/// that arrived after it (kept for the tunnel).
fn read_head(client: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let early = buffer.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buffer).into_owned(), early));
        }
        if buffer.len() > MAX_REQUEST_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let read = client.read(&mut chunk)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// The `host` and `port` of a `CONNECT host:port HTTP/1.x` request line; IPv6 hosts in
/// brackets, returned without them.
fn connect_target(head: &str) -> Option<(String, u16)> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let (method, authority, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method != "CONNECT" || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let (host, port) = authority.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The target's addresses the policy permits, in resolver order. A name that does not
/// resolve has none, and is refused like an internal one.
fn permitted_addresses(target: &(String, u16), policy: &EgressPolicy) -> Vec<SocketAddr> {
    let (host, port) = target;
    let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, *port)],
        Err(_) => (host.as_str(), *port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default(),
    };
    resolved
        .into_iter()
        .filter(|address| policy.permits(address.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused_and_public_ones_permitted() {
        let policy = EgressPolicy::default();
        let refused = [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.2.10",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:7f00:0001::1",
            "2002:c0a8:0101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ];
        for text in refused {
            assert!(!policy.permits(ip(text)), "{text} must be refused");
        }
        let permitted = [
            "140.82.112.3",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:140.82.112.3",
            "64:ff9b::8c52:7003",
            "2002:8c52:7003::1",
        ];
        for text in permitted {
            assert!(policy.permits(ip(text)), "{text} must be permitted");
        }
    }

    #[test]
    fn allowed_networks_are_cidrs() {
        let config =
            Config::parse("[git]\nallowed_networks = [\"10.1.2.0/24\", \"fd00::/8\"]\n").unwrap();
        let policy = EgressPolicy::from_config(&config.git);
        assert!(policy.permits("10.1.2.3".parse().unwrap()));
        assert!(!policy.permits("10.1.3.3".parse().unwrap()));
        assert!(
            !EgressPolicy::from_config(&Config::default().git).permits("10.1.2.3".parse().unwrap())
        );
        let err = Config::parse("[git]\nallowed_networks = [\"10.1.2.0\"]\n").unwrap_err();
        assert!(
            err.contains("CIDR") && err.contains("allowed_networks"),
            "{err}"
        );
    }

    #[test]
    fn operator_networks_open_exactly_what_they_name() {
        let allowed: Vec<AllowedNetwork> = ["10.1.2.0/24", "127.0.0.1/32", "fd00::/8"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let policy = EgressPolicy::new(&allowed);
        for text in ["10.1.2.7", "127.0.0.1", "::ffff:127.0.0.1", "fd00::5"] {
            assert!(policy.permits(ip(text)), "{text}");
        }
        for text in ["10.1.3.7", "127.0.0.2", "::1", "fc00::5", "169.254.169.254"] {
            assert!(!policy.permits(ip(text)), "{text}");
        }
        // Host bits are dropped, as a network means its whole prefix.
        assert_eq!(
            "10.1.2.9/24".parse::<AllowedNetwork>().unwrap().to_string(),
            "10.1.2.0/24"
        );
        for bad in ["10.1.2.0", "10.1.2.0/33", "example.com/8", ""] {
            let err = bad.parse::<AllowedNetwork>().unwrap_err();
            assert!(err.contains("CIDR"), "{bad}: {err}");
        }
    }

    /// The machine's own addresses count whatever range they are in: a VPS's public
    /// address reaches the daemon's own listeners.
    #[test]
    fn this_machines_own_addresses_are_refused() {
        let interfaces = if_addrs::get_if_addrs().unwrap();
        assert!(!interfaces.is_empty());
        for interface in interfaces {
            assert!(
                is_own_address(canonical(interface.ip())),
                "{}",
                interface.ip()
            );
            assert!(
                !EgressPolicy::default().permits(interface.ip()),
                "{} is this machine's",
                interface.ip()
            );
        }
        assert!(!is_own_address(ip("192.0.2.77")));
        assert!(!is_own_address(ip("2001:db8::77")));
    }

    #[test]
    fn connect_request_lines() {
        let cases = [
            (
                "CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n",
                Some(("github.com", 443)),
            ),
            ("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n", Some(("::1", 8443))),
            (
                "CONNECT 10.0.0.1:22 HTTP/1.0\r\n\r\n",
                Some(("10.0.0.1", 22)),
            ),
            ("GET http://github.com/ HTTP/1.1\r\n\r\n", None),
            ("CONNECT github.com HTTP/1.1\r\n\r\n", None),
            ("CONNECT github.com:0 HTTP/1.1\r\n\r\n", None),
            ("CONNECT :443 HTTP/1.1\r\n\r\n", None),
            ("CONNECT a:1 HTTP/2 extra\r\n\r\n", None),
        ];
        for (head, expected) in cases {
            let found = connect_target(head);
            assert_eq!(
                found.as_ref().map(|(h, p)| (h.as_str(), *p)),
                expected,
                "{head:?}"
            );
        }
    }

    /// The proxy refuses a loopback target without connecting to it: the listener there
    /// never sees a connection.
    #[test]
    fn the_proxy_refuses_internal_targets_without_connecting() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let proxy =
            ConnectProxy::start(EgressPolicy::default(), deadline, OriginVerifier::system())
                .unwrap();
        for target in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::ffff:127.0.0.1]:{port}"),
            "169.254.169.254:443".to_owned(),
            "no-such-host.invalid:443".to_owned(),
        ] {
            let mut client = TcpStream::connect(proxy.address).unwrap();
            write!(
                client,
                "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
            assert_eq!(proxy.refusal(), Some(ProxyRefusal::NotPermitted));
        }
        assert_eq!(
            listener.accept().map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::WouldBlock),
            "the refused listener saw a connection"
        );
    }

    fn connect_through(proxy: &ConnectProxy, target: &str) -> (TcpStream, String) {
        let mut client = TcpStream::connect(proxy.address).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(client, "CONNECT {target} HTTP/1.1\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        (client, String::from_utf8_lossy(&head).into_owned())
    }

    fn loopback_proxy(verifier: OriginVerifier) -> ConnectProxy {
        let allowed = ["127.0.0.0/8".parse().unwrap()];
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        ConnectProxy::start(EgressPolicy::new(&allowed), deadline, verifier).unwrap()
    }

    /// With the network allowed and the origin's certificate verified by a handshake of
    /// the proxy's own, the proxy tunnels to the target: TLS through it reaches the
    /// origin and back.
    #[test]
    fn the_proxy_tunnels_to_an_allowed_network() {
        let (ca, chain, key) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        let identity = (chain, key);
        let (port, received) = crate::tls::test_tls_server(vec![identity.clone(), identity]);
        let proxy = loopback_proxy(OriginVerifier::trusting_pem(ca.as_bytes()).unwrap());
        let (client, head) = connect_through(&proxy, &format!("127.0.0.1:{port}"));
        assert_eq!(head, "HTTP/1.1 200 Connection Established\r\n\r\n");
        let mut tls = crate::tls::test_tls_client(client, &ca, "127.0.0.1");
        tls.write_all(b"hello").unwrap();
        let mut echoed = [0u8; 5];
        tls.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"hello");
        assert_eq!(proxy.refusal(), None);
        // The proxy's own handshake came first, with nothing sent after it.
        let (first, bytes) = received.recv().unwrap();
        assert_eq!((first, bytes), (0, Vec::new()));
    }

    /// An origin whose certificate does not verify gets no tunnel: the CONNECT is refused
    /// with the reason kept for the fetch.
    #[test]
    fn an_untrusted_origin_gets_no_tunnel() {
        let (_, chain, key) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        let (other_ca, _, _) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        let (port, _) = crate::tls::test_tls_server(vec![(chain, key)]);
        let proxy = loopback_proxy(OriginVerifier::trusting_pem(other_ca.as_bytes()).unwrap());
        let (_, head) = connect_through(&proxy, &format!("127.0.0.1:{port}"));
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        let Some(ProxyRefusal::Untrusted(why)) = proxy.refusal() else {
            panic!("{:?}", proxy.refusal());
        };
        assert!(why.contains("not trusted"), "{why}");
    }

    /// A leaf libgit2 received that does not verify cuts every tunnel at once: what the
    /// client sends afterwards never reaches the origin, and later CONNECTs are refused.
    #[test]
    fn a_refused_leaf_cuts_every_tunnel() {
        let (ca, chain, key) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        let identity = (chain.clone(), key);
        let (port, received) = crate::tls::test_tls_server(vec![identity.clone(), identity]);
        let proxy = loopback_proxy(OriginVerifier::trusting_pem(ca.as_bytes()).unwrap());
        let (client, head) = connect_through(&proxy, &format!("127.0.0.1:{port}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut tls = crate::tls::test_tls_client(client, &ca, "127.0.0.1");
        tls.write_all(b"hello").unwrap();
        let mut echoed = [0u8; 5];
        tls.read_exact(&mut echoed).unwrap();
        // The leaf the origin presented passes; a stranger's does not.
        assert!(proxy.accept_certificate(&crate::tls::test_leaf_der(&chain), "127.0.0.1"));
        let (_, stranger, _) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        assert!(!proxy.accept_certificate(&crate::tls::test_leaf_der(&stranger), "127.0.0.1"));
        let _ = tls.write_all(b"secret");
        let _ = tls.flush();
        let mut reports: Vec<(usize, Vec<u8>)> = received.iter().take(2).collect();
        reports.sort();
        assert_eq!(reports, [(0, Vec::new()), (1, b"hello".to_vec())]);
        let Some(ProxyRefusal::Untrusted(why)) = proxy.refusal() else {
            panic!("{:?}", proxy.refusal());
        };
        assert!(why.contains("not trusted"), "{why}");
        let (_, head) = connect_through(&proxy, &format!("127.0.0.1:{port}"));
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    }
}
