//! User-mode networking with `--net slirp4netns`: the interface, route and name files
//! inside, outbound NAT to this host's own address, the host's loopback closed unless
//! allowed, published ports (TCP and UDP, bound only where asked), the profile's network
//! object, the Landlock port rule, the errors, and no slirp4netns left behind however the
//! sandbox ends.
//!
//! All traffic stays on this machine: every server is one the test starts on the host's
//! 127.0.0.1, on the host's own non-loopback address, or inside the sandbox. Each positive
//! test shows the sandbox really had its own network (`ifaces lo tap0`) or has a control
//! run showing the same attempt fails without the feature, so that nothing passes because
//! the option was silently ignored.
//!
//! The probes inside run tests/data/net.py (`$SBX_TEST_DATA`, bound in read-only) with
//! /usr/bin/python3; it prints one `KEY RESULT` line per step.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::{ChildStdin, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::*;

const PYTHON: &str = "/usr/bin/python3";
const SLIRP: [&str; 2] = ["--net", "slirp4netns"];
/// Ports the servers inside listen on: the sandbox has a network namespace of its own, so
/// fixed ports cannot clash; above 1024, since the command is not root inside.
const INSIDE_TCP: u16 = 8080;
const INSIDE_UDP: u16 = 8053;
/// How long to wait for slirp4netns processes to go after the sandbox has ended.
const LINGER: Duration = Duration::from_secs(10);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------
// Requirements, and the lock that keeps the slirp4netns counts exact
// ---------------------------------------------------------------------------------------

/// Every test here that runs sbx holds this lock: shared by most, exclusively by the ones
/// that compare the sets of slirp4netns processes before and after a run, so that no other
/// test's slirp4netns comes or goes in between.
static SLIRP_PROCESSES: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SLIRP_PROCESSES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SLIRP_PROCESSES
        .write()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A sandbox, slirp4netns and /dev/net/tun as `sbx check` reports them, python3 and net.py.
fn require_net() -> bool {
    if !(require_sandbox() && require("slirp4netns") && require("dev_net_tun")) {
        return false;
    }
    if !Path::new(PYTHON).exists() {
        return skip(&format!(
            "{PYTHON} is missing (ci/setup-host.sh installs python3)"
        ));
    }
    let script = data_dir().join("net.py");
    if !script.exists() {
        return skip(&format!(
            "{} is missing; set SBX_TEST_DATA to the staged tests/data",
            script.display()
        ));
    }
    true
}

/// [`require_net`], then the shared lock.
fn require_slirp() -> Option<RwLockReadGuard<'static, ()>> {
    require_net().then(shared)
}

/// [`require_net`], then the exclusive lock.
fn require_slirp_alone() -> Option<RwLockWriteGuard<'static, ()>> {
    require_net().then(exclusive)
}

/// This host's own IPv4 address of global scope, from `ip -4 -o addr show scope global`;
/// not one in 10.0.2.0/24, which inside is slirp4netns's virtual network.
fn host_address() -> Option<Ipv4Addr> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            fields.position(|f| f == "inet")?;
            fields.next()?.split('/').next()?.parse::<Ipv4Addr>().ok()
        })
        .find(|ip| ip.octets()[..3] != [10, 0, 2])
}

/// [`host_address`], or a skip saying the host has none.
fn require_host_address() -> Option<Ipv4Addr> {
    let found = host_address();
    if found.is_none() {
        skip("this host has no IPv4 address of global scope (`ip -4 addr show scope global`)");
    }
    found
}

// ---------------------------------------------------------------------------------------
// Probes inside
// ---------------------------------------------------------------------------------------

/// `sbx run OPTIONS --ro-bind DATA -- python3 DATA/net.py ARGS...` in `dir`.
fn net_py(dir: &Path, options: &[&str], args: &[&str]) -> Command {
    let data = data_dir();
    let data = data.to_str().expect("SBX_TEST_DATA is UTF-8");
    let script = format!("{data}/net.py");
    let mut cmd = sbx_run(dir, options);
    cmd.args(["--ro-bind", data, "--", PYTHON, &script])
        .args(args);
    cmd
}

/// Runs the probe steps `args` and returns their results by key (`ifaces`, `tcp:H:P`, ...).
#[track_caller]
fn probe(dir: &Path, options: &[&str], args: &[&str]) -> (Outcome, BTreeMap<String, String>) {
    let out = run(net_py(dir, options, args));
    out.assert_success();
    let results = out
        .lines()
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(key, result)| (key.to_string(), result.to_string()))
        .collect();
    (out, results)
}

/// The result for `key`, which must be there.
#[track_caller]
fn result<'a>(results: &'a BTreeMap<String, String>, key: &str, out: &Outcome) -> &'a str {
    results
        .get(key)
        .unwrap_or_else(|| panic!("no result for {key}\n{out}"))
}

/// The sandbox had a network of its own with slirp4netns's interface: not the host's
/// network, not loopback alone.
#[track_caller]
fn assert_slirp_interfaces(results: &BTreeMap<String, String>, out: &Outcome) {
    assert_eq!(
        result(results, "ifaces", out),
        "lo tap0",
        "the sandbox should have lo and slirp4netns's tap0\n{out}"
    );
}

/// A server inside (`net.py serve`), running until [`InsideServer::stop`].
struct InsideServer {
    running: Running,
    stdin: Option<ChildStdin>,
    token: String,
}

impl InsideServer {
    /// Starts `serve PROTO PORT TOKEN` in a sandbox with `options` and waits until it
    /// listens.
    #[track_caller]
    fn start(dir: &Path, options: &[&str], proto: &str, port: u16) -> InsideServer {
        let token = unique("inside");
        let port = port.to_string();
        let mut cmd = net_py(dir, options, &["serve", proto, &port, &token]);
        let mut running = spawn_with_stdin(&mut cmd);
        let stdin = running.child.stdin.take();
        running.wait_for_stdout(&format!("listening {proto} {port}"), TIMEOUT);
        InsideServer {
            running,
            stdin,
            token,
        }
    }

    /// What the server answers to `ping`.
    fn reply(&self) -> String {
        format!("{} ping", self.token)
    }

    /// Closes its stdin, so it ends; returns how many requests it served.
    #[track_caller]
    fn stop(mut self) -> usize {
        drop(self.stdin.take());
        let out = self.running.finish(TIMEOUT);
        out.assert_success();
        out.lines()
            .iter()
            .find_map(|l| l.strip_prefix("served ")?.parse().ok())
            .unwrap_or_else(|| panic!("the server inside did not say what it served\n{out}"))
    }
}

// ---------------------------------------------------------------------------------------
// Servers and clients on the host
// ---------------------------------------------------------------------------------------

/// A server the test runs on the host: it answers each request line with `TOKEN LINE`
/// and counts the connections (TCP) or datagrams (UDP) it got.
struct HostServer {
    addr: SocketAddr,
    token: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HostServer {
    fn tcp(ip: impl Into<IpAddr>) -> HostServer {
        let ip = ip.into();
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("listen on {ip}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        HostServer::start(addr, move |token, hits, stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        hits.fetch_add(1, Ordering::SeqCst);
                        answer(&stream, token);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    }

    fn udp(ip: impl Into<IpAddr>) -> HostServer {
        let ip = ip.into();
        let socket = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        HostServer::start(addr, move |token, hits, stop| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let _ = socket.send_to(format!("{token} {}\n", line.trim()).as_bytes(), peer);
                }
            }
        })
    }

    fn start(
        addr: SocketAddr,
        serve: impl FnOnce(&str, &AtomicUsize, &AtomicBool) + Send + 'static,
    ) -> HostServer {
        let token = unique("host");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (token, hits, stop) = (token.clone(), Arc::clone(&hits), Arc::clone(&stop));
            thread::spawn(move || serve(&token, &hits, &stop))
        };
        HostServer {
            addr,
            token,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// What the server answers to `ping`, as the probe prints it.
    fn ok(&self) -> String {
        format!("ok {} ping", self.token)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request line from `stream` and answers it.
fn answer(stream: &TcpStream, token: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_ok() {
        let mut writer = stream;
        let _ = writer.write_all(format!("{token} {}\n", line.trim()).as_bytes());
    }
}

/// Connects from the host, sends `ping` and returns the line that comes back.
fn host_tcp(addr: impl ToSocketAddrs) -> std::io::Result<String> {
    let addr = addr.to_socket_addrs()?.next().expect("an address");
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&stream).write_all(b"ping\n")?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Sends `ping` from the host (again every half second) until a datagram comes back or
/// `timeout` passes.
fn host_udp(addr: impl ToSocketAddrs, timeout: Duration) -> Option<String> {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        // A refused send (ICMP port unreachable) is retried like a lost one.
        let _ = socket.send(b"ping\n");
        if let Ok(n) = socket.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    None
}

/// A port nobody listens on at `ip` right now, for TCP and UDP alike.
fn free_port(ip: IpAddr) -> u16 {
    loop {
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// Whether the process `pid` is the current user's: one of its uids (real, effective,
/// saved, filesystem) is the caller's or one of its subordinate uids. slirp4netns with
/// `--enable-sandbox` joins the sandbox's user namespace and runs with the effective uid of
/// root there, a subordinate uid on the host, while its real uid stays the caller's.
fn is_ours(pid: i32) -> bool {
    let me = u64::from(uid());
    let ranges = subordinate_ranges("/etc/subuid");
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .into_iter()
        .flat_map(str::split_whitespace)
        .filter_map(|u| u.parse::<u64>().ok())
        .any(|u| {
            u == me
                || ranges
                    .iter()
                    .any(|&(start, count)| (start..start + count).contains(&u))
        })
}

/// The slirp4netns processes of the current user: pid and command line.
fn slirp4netns_processes() -> BTreeMap<i32, Vec<String>> {
    processes_with("slirp4netns")
        .into_iter()
        .filter(|p| {
            p.argv
                .first()
                .and_then(|a| Path::new(a).file_name())
                .is_some_and(|name| name == "slirp4netns")
        })
        .filter(|p| is_ours(p.pid))
        .map(|p| (p.pid, p.argv))
        .collect()
}

/// Waits until a slirp4netns process that was not in `before` appears; returns its pid.
#[track_caller]
fn wait_for_new_slirp4netns(before: &BTreeMap<i32, Vec<String>>) -> i32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = slirp4netns_processes();
        if let Some(&pid) = now.keys().find(|pid| !before.contains_key(pid)) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no slirp4netns process of this user appeared within {TIMEOUT:?}: is it started? \
             before: {before:?}, now: {now:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every slirp4netns process not in `before` is gone; fails naming the rest.
#[track_caller]
fn assert_no_new_slirp4netns(before: &BTreeMap<i32, Vec<String>>) {
    let deadline = Instant::now() + LINGER;
    loop {
        let left: BTreeMap<i32, Vec<String>> = slirp4netns_processes()
            .into_iter()
            .filter(|(pid, _)| !before.contains_key(pid))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slirp4netns outlived the sandbox ({LINGER:?} after it ended): {left:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// An sbx error: exit 125, each of `needles` in the message, and one message only.
#[track_caller]
fn assert_one_error(out: &Outcome, needles: &[&str]) {
    out.assert_sbx_error(needles);
    let err = out.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error message, nothing else\n{out}");
}

/// A profile file in `dir` with `network` as its network setting, on top of `default`.
fn network_profile(dir: &TempDir, name: &str, network: &str) -> String {
    let path = dir.join(format!("{name}.json"));
    fs::write(
        &path,
        format!(r#"{{"extends": "default", "network": {network}}}"#),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

// ---------------------------------------------------------------------------------------
// Inside: interface, route, name files
// ---------------------------------------------------------------------------------------

#[test]
fn slirp4netns_gives_tap0_with_address_route_and_mtu() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &SLIRP,
        "PATH=$PATH:/usr/sbin:/sbin; ip -4 -o addr show dev tap0; ip route show default; \
         ip -o link show dev tap0; cat /proc/net/dev",
    );
    out.assert_success();
    let lines = out.lines();
    let has = |pred: &dyn Fn(&str) -> bool| lines.iter().any(|l| pred(l));
    assert!(
        has(&|l| l.contains("tap0") && l.contains("inet 10.0.2.100/24")),
        "tap0 has 10.0.2.100/24\n{out}"
    );
    assert!(
        has(&|l| l.starts_with("default via 10.0.2.2 dev tap0")),
        "the default route goes through 10.0.2.2 on tap0\n{out}"
    );
    let link = lines
        .iter()
        .find(|l| l.contains("tap0:") && l.contains(" mtu "))
        .unwrap_or_else(|| panic!("no link line for tap0\n{out}"));
    assert!(link.contains(" mtu 65520 "), "MTU 65520: {link}\n{out}");
    let flags = link.split(['<', '>']).nth(1).unwrap_or("");
    assert!(flags.split(',').any(|f| f == "UP"), "tap0 is up: {link}");
}

#[test]
fn resolv_conf_points_at_the_slirp4netns_dns() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let host_before = fs::read("/etc/resolv.conf").ok();
    let out = sandbox_sh(dir.path(), &SLIRP, "cat /etc/resolv.conf");
    out.assert_success();
    let nameservers: Vec<String> = out
        .lines()
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver")).then(|| f.next().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(
        nameservers.first().map(String::as_str),
        Some("10.0.2.3"),
        "the first nameserver is slirp4netns's DNS\n{out}"
    );
    assert!(
        !nameservers.iter().any(|n| n.starts_with("127.")),
        "a loopback nameserver would be the sandbox's own loopback\n{out}"
    );
    assert_eq!(
        fs::read("/etc/resolv.conf").ok(),
        host_before,
        "the host's /etc/resolv.conf changed"
    );
}

/// The `/etc/hosts` lines (fields) of `text`.
fn hosts_entries(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn hosts_file_names_the_sandbox_hostname() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let host_before = fs::read("/etc/hosts").ok();
    let name = unique("host");
    let runs: [(&str, Vec<&str>); 2] = [
        ("--hostname", with(&SLIRP, &["--hostname", &name])),
        ("the default hostname", SLIRP.to_vec()),
    ];
    for (what, options) in runs {
        let out = sandbox_sh(
            dir.path(),
            &options,
            "hostname; echo ---; cat /etc/hosts; echo ---; getent hosts \"$(hostname)\"",
        );
        out.assert_success();
        let text = out.stdout();
        let parts: Vec<&str> = text.split("---\n").collect();
        assert_eq!(parts.len(), 3, "{out}");
        let hostname = parts[0].trim();
        if what == "--hostname" {
            assert_eq!(hostname, name, "{out}");
        }
        let entries = hosts_entries(parts[1]);
        assert!(
            entries
                .iter()
                .any(|e| e[0] == "10.0.2.100" && e[1..].iter().any(|n| n == hostname)),
            "{what}: /etc/hosts maps {hostname} to 10.0.2.100\n{out}"
        );
        assert!(
            entries
                .iter()
                .any(|e| e[0] == "127.0.0.1" && e[1..].iter().any(|n| n == "localhost")),
            "{what}: /etc/hosts names localhost\n{out}"
        );
        assert!(
            parts[2].starts_with("10.0.2.100 "),
            "{what}: the hostname resolves to 10.0.2.100 inside\n{out}"
        );
    }
    let host_after = fs::read("/etc/hosts").ok();
    assert_eq!(host_after, host_before, "the host's /etc/hosts changed");
}

// ---------------------------------------------------------------------------------------
// The host's loopback
// ---------------------------------------------------------------------------------------

#[test]
fn host_loopback_is_unreachable_by_default() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let tcp = HostServer::tcp(LOCALHOST);
    let udp = HostServer::udp(LOCALHOST);
    let (t, u) = (tcp.port(), udp.port());
    let (out, results) = probe(
        dir.path(),
        &SLIRP,
        &[
            "ifaces",
            "tcp",
            "127.0.0.1",
            &t,
            "tcp",
            "10.0.2.2",
            &t,
            "5",
            "udp",
            "10.0.2.2",
            &u,
            "3",
        ],
    );
    assert_slirp_interfaces(&results, &out);
    // 127.0.0.1 inside is the sandbox's own loopback, where nothing listens.
    assert_eq!(
        result(&results, &format!("tcp:127.0.0.1:{t}"), &out),
        "ECONNREFUSED",
        "{out}"
    );
    let via_gateway = result(&results, &format!("tcp:10.0.2.2:{t}"), &out);
    assert!(
        !via_gateway.starts_with("ok") && via_gateway != "closed",
        "10.0.2.2 must not lead to the host's loopback: {via_gateway}\n{out}"
    );
    let udp_result = result(&results, &format!("udp:10.0.2.2:{u}"), &out);
    assert!(!udp_result.starts_with("ok"), "UDP: {udp_result}\n{out}");
    assert_eq!(
        (tcp.hits(), udp.hits()),
        (0, 0),
        "the host's loopback servers heard from the sandbox\n{out}"
    );
    // Control: the same servers, the same probe, with the loopback opened: they are
    // reachable, so the refusal above is the closed loopback's.
    let (out, results) = probe(
        dir.path(),
        &with(&SLIRP, &["--allow-host-loopback"]),
        &["tcp", "10.0.2.2", &t, "5"],
    );
    assert_eq!(
        result(&results, &format!("tcp:10.0.2.2:{t}"), &out),
        tcp.ok(),
        "control: --allow-host-loopback\n{out}"
    );
    assert_eq!(tcp.hits(), 1, "control: one connection");
}

#[test]
fn allow_host_loopback_reaches_the_hosts_loopback_at_10_0_2_2() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let tcp = HostServer::tcp(LOCALHOST);
    let udp = HostServer::udp(LOCALHOST);
    let (t, u) = (tcp.port(), udp.port());
    let steps = [
        "tcp",
        "10.0.2.2",
        &t,
        "udp",
        "10.0.2.2",
        &u,
        "tcp",
        "127.0.0.1",
        &t,
    ];
    let (out, results) = probe(
        dir.path(),
        &with(&SLIRP, &["--allow-host-loopback"]),
        &steps,
    );
    assert_eq!(
        result(&results, &format!("tcp:10.0.2.2:{t}"), &out),
        tcp.ok(),
        "{out}"
    );
    assert_eq!(
        result(&results, &format!("udp:10.0.2.2:{u}"), &out),
        udp.ok(),
        "{out}"
    );
    // 127.0.0.1 stays the sandbox's own loopback even so.
    assert_eq!(
        result(&results, &format!("tcp:127.0.0.1:{t}"), &out),
        "ECONNREFUSED",
        "{out}"
    );
    assert_eq!(tcp.hits(), 1, "one TCP connection from the sandbox");

    // Control: without the option the same connection does not get there.
    let (out, results) = probe(dir.path(), &SLIRP, &["tcp", "10.0.2.2", &t, "3"]);
    let closed = result(&results, &format!("tcp:10.0.2.2:{t}"), &out);
    assert!(!closed.starts_with("ok"), "control: {closed}\n{out}");
    assert_eq!(tcp.hits(), 1, "control: no connection without the option");
}

// ---------------------------------------------------------------------------------------
// Outbound NAT
// ---------------------------------------------------------------------------------------

#[test]
fn outbound_tcp_reaches_a_server_on_the_hosts_own_address() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let Some(ip) = require_host_address() else {
        return;
    };
    let dir = TempDir::new();
    let server = HostServer::tcp(ip);
    let (host, port) = (ip.to_string(), server.port());
    let (out, results) = probe(dir.path(), &SLIRP, &["ifaces", "tcp", &host, &port]);
    assert_slirp_interfaces(&results, &out);
    assert_eq!(
        result(&results, &format!("tcp:{host}:{port}"), &out),
        server.ok(),
        "{out}"
    );
    assert_eq!(server.hits(), 1);
}

#[test]
fn outbound_udp_reaches_a_server_on_the_hosts_own_address() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let Some(ip) = require_host_address() else {
        return;
    };
    let dir = TempDir::new();
    let server = HostServer::udp(ip);
    let (host, port) = (ip.to_string(), server.port());
    let (out, results) = probe(dir.path(), &SLIRP, &["ifaces", "udp", &host, &port]);
    assert_slirp_interfaces(&results, &out);
    assert_eq!(
        result(&results, &format!("udp:{host}:{port}"), &out),
        server.ok(),
        "{out}"
    );
    assert!(server.hits() >= 1);
}

// ---------------------------------------------------------------------------------------
// Published ports
// ---------------------------------------------------------------------------------------

#[test]
fn published_tcp_port_reaches_a_server_inside() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let hport = free_port(LOCALHOST);
    let publish = format!("{hport}:{INSIDE_TCP}");
    let server = InsideServer::start(
        dir.path(),
        &with(&SLIRP, &["--publish", &publish]),
        "tcp",
        INSIDE_TCP,
    );
    let reply = host_tcp((LOCALHOST, hport));
    let expected = server.reply();
    let served = server.stop();
    assert_eq!(
        reply.as_ref().ok(),
        Some(&expected),
        "127.0.0.1:{hport} reaches the server inside: {reply:?}"
    );
    assert_eq!(served, 1);

    // Control: without --publish the host cannot reach the same server.
    let server = InsideServer::start(dir.path(), &SLIRP, "tcp", INSIDE_TCP);
    let reply = host_tcp((LOCALHOST, hport));
    let served = server.stop();
    assert_eq!(
        reply.as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused),
        "control: nothing listens on 127.0.0.1:{hport} without --publish"
    );
    assert_eq!(served, 0, "control");
}

/// UDP needs the host's loopback open: slirp4netns sees a datagram from the host's
/// 127.0.0.1 as coming from 10.0.2.2, and with the loopback closed it drops the replies
/// (see the next test).
#[test]
fn published_udp_port_reaches_a_server_inside() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let hport = free_port(LOCALHOST);
    let publish = format!("{hport}:{INSIDE_UDP}/udp");
    let options = with(&SLIRP, &["--allow-host-loopback", "--publish", &publish]);
    let server = InsideServer::start(dir.path(), &options, "udp", INSIDE_UDP);
    let reply = host_udp((LOCALHOST, hport), Duration::from_secs(10));
    let expected = server.reply();
    let served = server.stop();
    assert_eq!(reply, Some(expected), "127.0.0.1:{hport}/udp");
    assert!(served >= 1);

    // Control: published for TCP only (the default protocol), UDP gets nowhere.
    let publish = format!("{hport}:{INSIDE_UDP}");
    let options = with(&SLIRP, &["--allow-host-loopback", "--publish", &publish]);
    let server = InsideServer::start(dir.path(), &options, "udp", INSIDE_UDP);
    let reply = host_udp((LOCALHOST, hport), Duration::from_secs(3));
    let served = server.stop();
    assert_eq!(reply, None, "control: {publish} is TCP only");
    assert_eq!(served, 0, "control");
}

#[test]
fn published_udp_port_without_allow_host_loopback_is_an_error_saying_why() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let publish = format!("{}:{INSIDE_UDP}/udp", free_port(LOCALHOST));
    let out = sandbox_sh(
        dir.path(),
        &with(&SLIRP, &["--publish", &publish]),
        "echo ran",
    );
    assert_one_error(&out, &["udp", "--allow-host-loopback"]);
    assert!(!out.stdout().contains("ran"), "{out}");
}

#[test]
fn published_port_is_bound_only_to_loopback_by_default() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let Some(ip) = require_host_address() else {
        return;
    };
    let dir = TempDir::new();
    let hport = free_port(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let publish = format!("{hport}:{INSIDE_TCP}");
    let server = InsideServer::start(
        dir.path(),
        &with(&SLIRP, &["--publish", &publish]),
        "tcp",
        INSIDE_TCP,
    );
    let outside = host_tcp((ip, hport));
    let loopback = host_tcp((LOCALHOST, hport));
    let expected = server.reply();
    let served = server.stop();
    assert_eq!(
        outside.as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused),
        "{ip}:{hport} must not reach the sandbox: --publish binds 127.0.0.1 by default"
    );
    // Control: the port is published, on 127.0.0.1.
    assert_eq!(loopback.as_ref().ok(), Some(&expected), "{loopback:?}");
    assert_eq!(served, 1);
}

#[test]
fn published_port_is_bound_only_to_the_given_address() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let Some(ip) = require_host_address() else {
        return;
    };
    let dir = TempDir::new();
    let hport = free_port(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let publish = format!("{ip}:{hport}:{INSIDE_TCP}");
    let server = InsideServer::start(
        dir.path(),
        &with(&SLIRP, &["--publish", &publish]),
        "tcp",
        INSIDE_TCP,
    );
    let given = host_tcp((ip, hport));
    let loopback = host_tcp((LOCALHOST, hport));
    let expected = server.reply();
    let served = server.stop();
    assert_eq!(
        given.as_ref().ok(),
        Some(&expected),
        "{ip}:{hport}: {given:?}"
    );
    assert_eq!(
        loopback.as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused),
        "127.0.0.1:{hport} must not reach the sandbox when {ip} is given"
    );
    assert_eq!(served, 1);
}

// ---------------------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------------------

#[test]
fn profile_network_object_turns_on_slirp4netns_and_publishes() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let hport = free_port(LOCALHOST);
    let profile = network_profile(
        &dir,
        "published",
        &format!(r#"{{"mode": "slirp4netns", "publish": ["{hport}:{INSIDE_TCP}"]}}"#),
    );
    let server = InsideServer::start(dir.path(), &["-p", &profile], "tcp", INSIDE_TCP);
    let reply = host_tcp((LOCALHOST, hport));
    let expected = server.reply();
    let served = server.stop();
    assert_eq!(reply.as_ref().ok(), Some(&expected), "{reply:?}");
    assert_eq!(served, 1);
}

#[test]
fn profile_allow_host_loopback_opens_the_hosts_loopback() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let server = HostServer::tcp(LOCALHOST);
    let port = server.port();
    let key = format!("tcp:10.0.2.2:{port}");
    let allowed = network_profile(
        &dir,
        "allowed",
        r#"{"mode": "slirp4netns", "allow_host_loopback": true}"#,
    );
    let (out, results) = probe(dir.path(), &["-p", &allowed], &["tcp", "10.0.2.2", &port]);
    assert_eq!(result(&results, &key, &out), server.ok(), "{out}");
    assert_eq!(server.hits(), 1);

    // Control: `false` keeps it closed.
    let closed = network_profile(
        &dir,
        "closed",
        r#"{"mode": "slirp4netns", "allow_host_loopback": false}"#,
    );
    let (out, results) = probe(
        dir.path(),
        &["-p", &closed],
        &["tcp", "10.0.2.2", &port, "3"],
    );
    let refused = result(&results, &key, &out);
    assert!(!refused.starts_with("ok"), "control: {refused}\n{out}");
    assert_eq!(server.hits(), 1, "control");
}

#[test]
fn profile_network_short_form_still_works() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    for (mode, expected) in [("none", "lo"), ("slirp4netns", "lo tap0")] {
        let profile = network_profile(&dir, mode, &format!("{mode:?}"));
        let (out, results) = probe(dir.path(), &["-p", &profile], &["ifaces"]);
        assert_eq!(
            result(&results, "ifaces", &out),
            expected,
            "\"network\": {mode:?}\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Landlock
// ---------------------------------------------------------------------------------------

#[test]
fn tcp_is_not_restricted_by_landlock_with_slirp4netns() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    // Landlock's network rules came with ABI 4; below, nothing restricts TCP at all.
    if !landlock::has_abi(4, dir.path()) {
        return;
    }
    let (out, results) = probe(dir.path(), &SLIRP, &["ifaces", "loopback"]);
    assert_slirp_interfaces(&results, &out);
    assert_eq!(result(&results, "loopback", &out), "ok", "{out}");
    // Control: with no network, Landlock denies TCP (see tests/escape.rs).
    let (out, results) = probe(dir.path(), &[], &["loopback"]);
    let denied = result(&results, "loopback", &out);
    assert!(
        denied == "EACCES" || denied == "EPERM",
        "control: --net none\n{out}"
    );
}

#[test]
fn landlock_limits_tcp_connect_to_the_listed_ports() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    if !landlock::has_abi(4, dir.path()) {
        return;
    }
    let listed = HostServer::tcp(LOCALHOST);
    let other = HostServer::tcp(LOCALHOST);
    let (lp, op) = (listed.port(), other.port());
    let steps = ["tcp", "10.0.2.2", &lp, "tcp", "10.0.2.2", &op];
    let profile = network_profile(
        &dir,
        "limited",
        &format!(r#"{{"mode": "slirp4netns", "allow_tcp_connect": [{lp}]}}"#),
    );
    let (out, results) = probe(
        dir.path(),
        &["-p", &profile, "--allow-host-loopback"],
        &steps,
    );
    assert_eq!(
        result(&results, &format!("tcp:10.0.2.2:{lp}"), &out),
        listed.ok(),
        "port {lp} is listed\n{out}"
    );
    let denied = result(&results, &format!("tcp:10.0.2.2:{op}"), &out);
    assert!(
        denied == "EACCES" || denied == "EPERM",
        "port {op} is not listed: {denied}\n{out}"
    );
    assert_eq!(
        other.hits(),
        0,
        "the unlisted port's server got a connection"
    );

    // Control: without the list the other port is reachable too.
    let open = network_profile(&dir, "open", r#"{"mode": "slirp4netns"}"#);
    let (out, results) = probe(dir.path(), &["-p", &open, "--allow-host-loopback"], &steps);
    assert_eq!(
        result(&results, &format!("tcp:10.0.2.2:{op}"), &out),
        other.ok(),
        "control: no allow_tcp_connect\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn a_host_port_in_use_is_an_error_naming_it() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let hport = taken.local_addr().unwrap().port().to_string();
    let marker = unique("ran");
    let publish = format!("{hport}:{INSIDE_TCP}");
    let out = sandbox_sh(
        dir.path(),
        &with(&SLIRP, &["--publish", &publish]),
        &format!("echo {marker}"),
    );
    assert_one_error(&out, &[&hport]);
    assert!(!out.stdout().contains(&marker), "the command ran\n{out}");
}

#[test]
fn publish_with_net_none_is_an_error() {
    if !require_sandbox() {
        return;
    }
    let _net = shared();
    let dir = TempDir::new();
    let publish = format!("{}:{INSIDE_TCP}", free_port(LOCALHOST));
    let out = sandbox_sh(
        dir.path(),
        &["--net", "none", "--publish", &publish],
        "echo ran",
    );
    assert_one_error(&out, &["--publish", "slirp4netns"]);
    assert!(!out.stdout().contains("ran"), "{out}");
}

#[test]
fn missing_slirp4netns_is_an_error_saying_what_to_install() {
    if !require_sandbox() {
        return;
    }
    let _net = shared();
    let dir = TempDir::new();
    let mut cmd = sbx_run(dir.path(), &with(&SLIRP, &["--", "sh", "-c", "echo ran"]));
    cmd.env("SBX_SLIRP4NETNS", "/nonexistent");
    let out = run(cmd);
    assert_one_error(&out, &["slirp4netns", "apt-get install slirp4netns"]);
    assert!(!out.stdout().contains("ran"), "{out}");
}

#[test]
fn malformed_publish_is_an_error_naming_it() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    for bad in [
        "8080",
        "http:80",
        "70000:80",
        "8080:0x50",
        "8080:80/sctp",
        "256.1.1.1:8080:80",
        "127.0.0.1:8080:80:90",
    ] {
        let out = sandbox_sh(dir.path(), &with(&SLIRP, &["--publish", bad]), "echo ran");
        assert_one_error(&out, &[bad]);
        assert!(!out.stdout().contains("ran"), "{bad}\n{out}");
    }
}

/// Without a subordinate range sbx maps only the caller's own ids, and slirp4netns runs
/// without its own sandbox (which needs id 0 mapped): publishing still works.
#[test]
fn nosubuid_slirp4netns_publishes_with_a_single_id_map() {
    if !subordinate_ranges("/etc/subuid").is_empty() {
        skip(&format!(
            "{} has a subuid range; nosubuid_ tests must run as a user without one \
             (ci/test.sh runs them as sbxnosub)",
            user_name()
        ));
        return;
    }
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let hport = free_port(LOCALHOST);
    let publish = format!("{hport}:{INSIDE_TCP}");
    let server = InsideServer::start(
        dir.path(),
        &with(&SLIRP, &["--publish", &publish]),
        "tcp",
        INSIDE_TCP,
    );
    let reply = host_tcp((LOCALHOST, hport));
    let expected = server.reply();
    let served = server.stop();
    assert_eq!(reply.as_ref().ok(), Some(&expected), "{reply:?}");
    assert_eq!(served, 1);
}

// ---------------------------------------------------------------------------------------
// Lifecycle: nothing left running
// ---------------------------------------------------------------------------------------

#[test]
fn no_slirp4netns_is_left_after_a_normal_exit() {
    let Some(_alone) = require_slirp_alone() else {
        return;
    };
    let dir = TempDir::new();
    let state = HostState::capture();
    let before = slirp4netns_processes();
    let mut cmd = sbx_run(
        dir.path(),
        &with(&SLIRP, &["--", "sh", "-c", "echo up; read _; exit 0"]),
    );
    let mut running = spawn_with_stdin(&mut cmd);
    let stdin = running.child.stdin.take();
    running.wait_for_stdout("up", TIMEOUT);
    // Control: the sandbox has its slirp4netns, and the scan finds it.
    let pid = wait_for_new_slirp4netns(&before);
    drop(stdin);
    running.finish(TIMEOUT).assert_success();
    assert_no_new_slirp4netns(&before);
    assert!(!slirp4netns_processes().contains_key(&pid));
    state.assert_nothing_new();
}

/// Three ways a start fails: before slirp4netns runs (the host port is taken), while it
/// runs (it cannot publish a port: the same host port twice), and after it is ready (the
/// sandbox cannot enter its working directory).
#[test]
fn no_slirp4netns_is_left_after_a_failed_start() {
    let Some(_alone) = require_slirp_alone() else {
        return;
    };
    let dir = TempDir::new();
    let state = HostState::capture();
    let before = slirp4netns_processes();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("{}:{INSIDE_TCP}", taken.local_addr().unwrap().port());
    let free = free_port(LOCALHOST);
    let (twice_a, twice_b) = (format!("{free}:8081"), format!("{free}:8082"));
    let missing = format!("/{}", unique("no-such-dir"));
    let failures: [(&str, Vec<&str>); 3] = [
        ("host port taken", vec!["--publish", &taken]),
        (
            "host port published twice",
            vec!["--publish", &twice_a, "--publish", &twice_b],
        ),
        ("missing working directory", vec!["-w", &missing]),
    ];
    for (what, options) in failures {
        let marker = unique("never");
        let script = format!("exec -a {marker} sleep 1000");
        let mut options = with(&SLIRP, &options);
        options.extend(["--", "bash", "-c", &script]);
        let out = run(sbx_run(dir.path(), &options));
        assert_eq!(out.code, 125, "{what}\n{out}");
        assert_no_new_slirp4netns(&before);
        assert_no_process_with(&marker, LINGER);
    }
    state.assert_nothing_new();
}

#[test]
fn no_slirp4netns_is_left_after_sbx_is_killed() {
    let Some(_alone) = require_slirp_alone() else {
        return;
    };
    let dir = TempDir::new_in(&home());
    let state = HostState::capture();
    let before = slirp4netns_processes();
    let marker = unique("kill9");
    let script = format!("exec -a {marker} sleep 1000");
    let mut cmd = sbx_run(dir.path(), &with(&SLIRP, &["--", "bash", "-c", &script]));
    let mut running = spawn(&mut cmd, None);
    wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    wait_for_new_slirp4netns(&before);

    running.signal(Signal::SIGKILL);
    let _ = running.child.wait();
    assert_no_new_slirp4netns(&before);
    assert_no_process_with(&marker, LINGER);
    state.assert_nothing_new();
    drop(running);
}

// ---------------------------------------------------------------------------------------
// What -v says
// ---------------------------------------------------------------------------------------

/// The `sbx: network:` lines of a run's output.
fn network_lines(out: &Outcome) -> Vec<String> {
    format!("{}{}", out.stdout(), out.stderr())
        .lines()
        .filter(|l| l.starts_with("sbx: network:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn verbose_run_names_slirp4netns() {
    let Some(_net) = require_slirp() else {
        return;
    };
    let dir = TempDir::new();
    let out = run(sbx_run(
        dir.path(),
        &with(&SLIRP, &["--verbose", "--", "true"]),
    ));
    out.assert_success();
    let lines = network_lines(&out);
    assert_eq!(lines.len(), 1, "one network line\n{out}");
    for needle in [
        "slirp4netns",
        "10.0.2.100/24 on tap0 via 10.0.2.2",
        "host loopback closed",
        "published: none",
    ] {
        assert!(lines[0].contains(needle), "-v names {needle:?}\n{out}");
    }
    // Control: with no network, -v says that instead, and not slirp4netns.
    let out = run(sbx_run(dir.path(), &["--verbose", "--", "true"]));
    out.assert_success();
    assert_eq!(
        network_lines(&out),
        ["sbx: network: none: loopback only"],
        "--net none\n{out}"
    );
}

/// In a network namespace of its own, the command may bind low ports as an ordinary user,
/// as in podman (`--publish 8080:80 -- python3 -m http.server 80`). UDP: Landlock keeps TCP
/// closed under `--net none`; the kernel's port check is the same for both.
#[test]
fn low_ports_are_the_sandboxs_own() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &[],
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
         /usr/bin/python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((\"127.0.0.1\", 80)); print(\"bound\")'",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["0", "bound"], "{out}");
    // Control: the host's own setting keeps low ports privileged.
    let host = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(
        host.trim(),
        "0",
        "the host lets anyone bind low ports; the test shows nothing"
    );
}
