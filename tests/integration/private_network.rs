//! A network namespace of its own for the browser under test, so the host's interface
//! churn never reaches it.
//!
//! Why: Chromium on Linux watches the host's addresses over netlink, and on every change
//! ("IP addresses changed", which Docker causes each time a container's veth pair comes or
//! goes on this shared engine) it closes all of its HTTP/2 sessions and abandons their
//! in-flight streams with `ERR_NETWORK_CHANGED`. HTTP/1.1 requests in flight survive that,
//! which is why the console-host test once passed only with `--disable-http2`. Chromium's
//! net log of a failed run shows `HTTP2_SESSION_CLOSE "Closing current sessions."
//! net_error -21` at the same millisecond as `NETWORK_IP_ADDRESSES_CHANGED`; the edge never
//! closed a connection. In a namespace of its own, Chromium sees only its own loopback.
//!
//! Layout: `unshare --net sleep infinity` holds a fresh namespace; one thread of this
//! process joins it (`setns`), brings its loopback up, starts chromedriver there and opens
//! the sockets that must live inside. Two relays cross the boundary: Chromium's
//! connections to `127.0.0.1:<port>` inside go to the same port on the host (the daemon),
//! and the test's WebDriver connections to a host port go to chromedriver inside.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream as StdStream},
    os::fd::AsFd,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

/// What the namespace's thread is asked to do once it has joined the namespace.
enum Request {
    /// Connect to `127.0.0.1:<port>` inside the namespace.
    Connect(u16, oneshot::Sender<io::Result<StdStream>>),
}

/// A private network namespace with chromedriver running in it.
pub struct PrivateNetwork {
    /// The process that keeps the namespace alive; killed on drop.
    holder: Child,
    /// Where the WebDriver client connects (a host port relayed to chromedriver).
    pub driver_address: SocketAddr,
    /// Ends the namespace's thread when dropped.
    _requests: mpsc::Sender<Request>,
    relays: Vec<JoinHandle<()>>,
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        for relay in &self.relays {
            relay.abort();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn namespace_link(pid: &str) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
}

impl PrivateNetwork {
    /// Starts chromedriver in a fresh network namespace in which `127.0.0.1:<port>` leads
    /// to the host's `127.0.0.1:<port>`, for each of `forwarded_ports`. Returns the
    /// namespace and chromedriver's process (in a process group of its own, so the
    /// browsers it starts can be ended with it).
    pub async fn start(chromedriver: &str, forwarded_ports: &[u16]) -> (Self, Child) {
        let mut holder = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start `unshare --net` (util-linux) to hold the browser's namespace");
        let pid = holder.id().to_string();
        // `unshare` execs `sleep` once it has its namespace: wait until the link differs.
        let own = namespace_link("self").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if namespace_link(&pid).is_ok_and(|link| link != own) {
                break;
            }
            if let Ok(Some(status)) = holder.try_wait() {
                panic!(
                    "`unshare --net` exited with {status}: the browser tests need root (or \
                     CAP_SYS_ADMIN) for a network namespace of their own"
                );
            }
            assert!(
                Instant::now() < deadline,
                "`unshare --net` never made a namespace"
            );
            // The poll interval: the loop checks its condition again.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let (setup_tx, setup_rx) = oneshot::channel();
        let (requests, incoming) = mpsc::channel::<Request>();
        let ports = forwarded_ports.to_vec();
        let chromedriver = chromedriver.to_owned();
        std::thread::Builder::new()
            .name("browser-netns".to_owned())
            .spawn(move || {
                let setup = join_and_set_up(&pid, &ports, &chromedriver);
                let failed = setup.is_err();
                let _ = setup_tx.send(setup);
                if failed {
                    return;
                }
                // Sockets keep the namespace they were made in, whichever thread uses them
                // later; only their creation has to happen here.
                while let Ok(Request::Connect(port, reply)) = incoming.recv() {
                    let _ = reply.send(StdStream::connect((Ipv4Addr::LOCALHOST, port)));
                }
            })
            .unwrap();
        let Setup {
            listeners,
            driver,
            driver_port,
        } = setup_rx
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("setting up the browser's network namespace: {err}"));

        let mut relays = Vec::new();
        for (&port, listener) in forwarded_ports.iter().zip(listeners) {
            listener.set_nonblocking(true).unwrap();
            let listener = TcpListener::from_std(listener).unwrap();
            relays.push(tokio::spawn(async move {
                while let Ok((mut inside, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(mut host) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inside, &mut host).await;
                        }
                    });
                }
            }));
        }
        let driver_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let driver_address = driver_listener.local_addr().unwrap();
        let connect = requests.clone();
        relays.push(tokio::spawn(async move {
            while let Ok((mut host, _)) = driver_listener.accept().await {
                let (reply, answer) = oneshot::channel();
                if connect.send(Request::Connect(driver_port, reply)).is_err() {
                    return;
                }
                tokio::spawn(async move {
                    let Ok(Ok(inside)) = answer.await else {
                        return;
                    };
                    if inside.set_nonblocking(true).is_err() {
                        return;
                    }
                    if let Ok(mut inside) = TcpStream::from_std(inside) {
                        let _ = tokio::io::copy_bidirectional(&mut host, &mut inside).await;
                    }
                });
            }
        }));
        let network = Self {
            holder,
            driver_address,
            _requests: requests,
            relays,
        };
        assert!(
            network.holds(driver.id()),
            "chromedriver runs in the browser's namespace"
        );
        (network, driver)
    }

    /// Whether `pid` lives in this namespace rather than the host's.
    pub fn holds(&self, pid: u32) -> bool {
        let ours = namespace_link(&self.holder.id().to_string()).unwrap();
        namespace_link(&pid.to_string()).is_ok_and(|link| link == ours)
    }
}

/// What the namespace's thread hands back after joining it.
struct Setup {
    /// One listener per forwarded port, on the namespace's loopback.
    listeners: Vec<StdListener>,
    driver: Child,
    driver_port: u16,
}

/// Runs on the namespace's thread: joins the namespace, brings its loopback up, opens the
/// forwarded ports and starts chromedriver on a free port, all inside.
fn join_and_set_up(pid: &str, ports: &[u16], chromedriver: &str) -> io::Result<Setup> {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    rustix::thread::move_into_link_name_space(
        namespace.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    // Children take the namespace of the thread that starts them.
    let lo_up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !lo_up.success() {
        return Err(io::Error::other(format!(
            "`ip link set lo up` failed: {lo_up}"
        )));
    }
    let listeners = ports
        .iter()
        .map(|port| StdListener::bind((Ipv4Addr::LOCALHOST, *port)))
        .collect::<io::Result<Vec<_>>>()?;
    let driver_port = StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let driver = std::os::unix::process::CommandExt::process_group(
        Command::new(chromedriver).arg(format!("--port={driver_port}")),
        0,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    Ok(Setup {
        listeners,
        driver,
        driver_port,
    })
}
