//! Fault injection on the store: a full disk, descriptor exhaustion, torn
//! writes and flipped bits in the database file, and `kill -9` during
//! writes. Each case keeps a model of the admin writes that were
//! acknowledged, checks it after a restart, and prints
//! `acknowledged writes lost: N` (the case fails unless N is 0).
//!
//! Random choices are seeded (`FAULT_SEED`, else a fixed default) and the
//! seed is printed, so a failing case can be replayed. Every case is
//! bounded in writes and time; nothing sleeps to wait for a state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use breakerd_e2e::{TestServer, config, within};
use breakerd_proto::v1 as pb;
use breakerd_testkit::process::{ChildGuard, drain_lines};
use tonic::transport::Channel;

/// The seed of this run's random choices.
fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b4ea_0011)
}

/// A small deterministic generator (xorshift64*): enough for offsets.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The override each circuit must have after a restart (`None`: none).
type Model = BTreeMap<String, Option<String>>;

fn set_override(name: &str, reason: &str) -> pb::SetOverrideRequest {
    pb::SetOverrideRequest {
        name: name.into(),
        kind: pb::OverrideKind::ForcedOpen as i32,
        actor: "fault".into(),
        reason: reason.into(),
        expires_in_ms: 0,
    }
}

/// The reason of the override `name` has now, if any.
async fn override_of(
    admin: &mut pb::admin_client::AdminClient<Channel>,
    name: &str,
) -> Option<String> {
    match admin
        .get_circuit(pb::GetCircuitRequest { name: name.into() })
        .await
    {
        Ok(d) => d
            .into_inner()
            .snapshot
            .and_then(|s| s.r#override)
            .map(|o| o.reason),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => panic!("get_circuit {name}: {s}"),
    }
}

/// Compares the server's overrides with the model; returns (acknowledged
/// writes lost, refused writes in effect).
async fn check(
    admin: &mut pb::admin_client::AdminClient<Channel>,
    model: &Model,
) -> (usize, usize) {
    let (mut lost, mut unwanted) = (0, 0);
    for (name, want) in model {
        let got = override_of(admin, name).await;
        match (want, &got) {
            (Some(w), Some(g)) if w == g => {}
            (Some(_), _) => {
                eprintln!("lost: {name} should have {want:?}, has {got:?}");
                lost += 1;
            }
            (None, Some(_)) => {
                eprintln!("in effect though refused: {name} has {got:?}");
                unwanted += 1;
            }
            (None, None) => {}
        }
    }
    (lost, unwanted)
}

fn report(case: &str, lost: usize, unwanted: usize) {
    println!("{case}: acknowledged writes lost: {lost}; refused writes in effect: {unwanted}");
    assert_eq!((lost, unwanted), (0, 0), "{case}");
}

fn store_config(dir: &Path) -> breakerd::config::Config {
    config(&format!(
        "[store]\npath = {:?}\n[server]\nshutdown_drain_ms = 500\n",
        dir.display().to_string()
    ))
}

/// Unmounts the tmpfs when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_then_recovers_without_losing_any() {
    if !is_root() {
        println!("full disk: skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    if !status.success() {
        println!(
            "full disk: skipped: mount -t tmpfs failed ({status}), e.g. in a container without CAP_SYS_ADMIN"
        );
        return;
    }
    let mount = Mount(dir.path().to_owned());
    let store = dir.path().join("store");
    let server = TestServer::start_with(store_config(&store)).await;
    let mut admin = server.admin();
    let mut model = Model::new();
    let reason = |i: usize| format!("{i:04} {}", "x".repeat(900));
    for i in 0..20 {
        let name = format!("before-{i}");
        admin
            .set_override(set_override(&name, &reason(i)))
            .await
            .unwrap();
        model.insert(name, Some(reason(i)));
    }

    // Fill the file system.
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).and_then(|()| f.sync_all()).is_ok() {}
    }
    let (mut refused, mut acked_full) = (0, 0);
    for i in 0..2_000 {
        let name = format!("full-{i}");
        match admin.set_override(set_override(&name, &reason(i))).await {
            Ok(_) => {
                acked_full += 1;
                model.insert(name, Some(reason(i)));
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                assert!(
                    status.message().contains("breakerd.redb"),
                    "the error names the store: {}",
                    status.message()
                );
                // Not in effect right away, nor after the restart below.
                assert_eq!(override_of(&mut admin, &name).await, None, "{name}");
                model.insert(name, None);
                if refused == 0 {
                    println!("full disk: first refusal: {}", status.message());
                }
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
        }
    }
    assert!(
        refused > 0,
        "the disk never filled up ({acked_full} writes acknowledged)"
    );
    // The data plane goes on.
    server
        .breaker()
        .acquire(pb::AcquireRequest {
            circuit: "data-plane".into(),
            node_id: "n1".into(),
        })
        .await
        .expect("acquire while the disk is full");

    std::fs::remove_file(&filler).unwrap();
    for i in 0..20 {
        let name = format!("after-{i}");
        admin
            .set_override(set_override(&name, &reason(i)))
            .await
            .expect("writes succeed again once space returns, without a restart");
        model.insert(name, Some(reason(i)));
    }
    println!("full disk: {acked_full} writes acknowledged and {refused} refused while full");
    server.crash().await;
    let server = TestServer::start_with(store_config(&store)).await;
    let (lost, unwanted) = check(&mut server.admin(), &model).await;
    server.stop().await.unwrap();
    drop(mount);
    report("full disk", lost, unwanted);
}

/// The breakerd binary the tests crate was built beside (or BREAKERD_BIN),
/// built with cargo when missing.
fn breakerd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BREAKERD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/breakerd
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("breakerd"))
        .expect("target dir");
    if !bin.is_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root)
            .args(["build", "-p", "breakerd"])
            .status()
            .expect("cargo build -p breakerd");
        assert!(status.success(), "cargo build -p breakerd: {status}");
    }
    bin
}

/// The real binary on 127.0.0.1, its store in `dir`, at most `nofile`
/// descriptors when given.
struct Coordinator {
    child: ChildGuard,
    addr: SocketAddr,
}

impl Coordinator {
    fn start(dir: &Path, nofile: Option<u32>) -> Self {
        let bin = breakerd_bin();
        let mut cmd = Command::new("sh");
        let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
        cmd.arg("-c")
            .arg(format!("{limit}exec \"$0\" \"$@\""))
            .arg(&bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "off",
                "--log-format",
                "json",
            ])
            .args(["--log-level", "warn,breakerd::app=info"])
            .arg("--store")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(&mut cmd).expect("spawn breakerd");
        let out = child.take_stdout().expect("stdout");
        let rx = drain_lines(out, breakerd_testkit::log::listen_addr);
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{} did not log its listen address", bin.display()));
        Self { child, addr }
    }

    async fn admin(&self) -> pb::admin_client::AdminClient<Channel> {
        let channel = within(
            "connecting",
            Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect(),
        )
        .await
        .expect("connect");
        pb::admin_client::AdminClient::new(channel)
    }

    fn kill9(mut self) {
        self.child.signal("-KILL").expect("kill -9");
        self.child.kill_and_reap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Coordinator::start(dir.path(), Some(96));
    let mut admin = server.admin().await;
    let mut model = Model::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        let reason = format!("before {i}");
        admin
            .set_override(set_override(&name, &reason))
            .await
            .unwrap();
        model.insert(name, Some(reason));
    }
    // Flood the port with idle connections until the coordinator runs out
    // of descriptors (96 allowed; 400 offered).
    let mut flood = Vec::new();
    for _ in 0..400 {
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(server.addr),
        )
        .await
        {
            Ok(Ok(s)) => flood.push(s),
            _ => break,
        }
    }
    let (mut acked, mut refused) = (0, 0);
    for i in 0..30 {
        let name = format!("flood-{i}");
        let reason = format!("flood {i}");
        let mut req = tonic::Request::new(set_override(&name, &reason));
        req.set_timeout(Duration::from_secs(5));
        match admin.set_override(req).await {
            Ok(_) => {
                acked += 1;
                model.insert(name, Some(reason));
            }
            // Unknown outcome: neither required nor forbidden afterwards.
            Err(_) => refused += 1,
        }
    }
    let opened = flood.len();
    let in_use =
        std::fs::read_dir(format!("/proc/{}/fd", server.child.pid())).map_or(0, |d| d.count());
    drop(flood);
    for i in 0..20 {
        let name = format!("after-{i}");
        let reason = format!("after {i}");
        admin
            .set_override(set_override(&name, &reason))
            .await
            .unwrap();
        model.insert(name, Some(reason));
    }
    println!(
        "descriptor exhaustion: {opened} idle connections opened, {in_use} of 96 descriptors in use; {acked} writes acknowledged and {refused} failed during the flood"
    );
    assert!(
        in_use >= 90,
        "the flood did not exhaust the descriptors ({in_use} of 96 in use)"
    );
    server.kill9();
    let server = Coordinator::start(dir.path(), None);
    let (lost, unwanted) = check(&mut server.admin().await, &model).await;
    report("descriptor exhaustion", lost, unwanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_write() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    println!("kill -9 during writes: seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for round in 0..3 {
        let server = Coordinator::start(dir.path(), None);
        let kill_after = 10 + rng.below(40) as usize;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writers = Vec::new();
        for w in 0..4 {
            let mut admin = server.admin().await;
            let tx = tx.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..200 {
                    let name = format!("r{round}-w{w}-{i}");
                    let reason = format!("round {round} writer {w} #{i}");
                    match admin.set_override(set_override(&name, &reason)).await {
                        Ok(_) => {
                            if tx.send((name, reason)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(tx);
        let mut acked = 0;
        while acked < kill_after {
            let Some((name, reason)) = rx.recv().await else {
                break;
            };
            model.insert(name, Some(reason));
            acked += 1;
        }
        // Writes are in flight: kill -9 now.
        server.kill9();
        for w in writers {
            let _ = w.await;
        }
        // Acknowledged before the kill took effect.
        while let Ok((name, reason)) = rx.try_recv() {
            model.insert(name, Some(reason));
            acked += 1;
        }
        println!("kill -9 during writes: round {round}: killed after {acked} acknowledged writes");
    }
    let server = Coordinator::start(dir.path(), None);
    let (lost, unwanted) = check(&mut server.admin().await, &model).await;
    report("kill -9 during writes", lost, unwanted);
}

#[test]
fn torn_writes_and_bit_flips_are_detected_never_silently_lost() {
    use breakerd_core::store::{CircuitRecord, Store, StoreError};
    let seed = seed();
    let mut rng = Rng::new(seed ^ 0x7042);
    println!("torn writes and bit flips: seed {seed}");
    let record = |i: u64| CircuitRecord {
        name: format!("c{i}"),
        state: breakerd_policy::State::Open,
        generation: 10 + i,
        open_until_ms: Some(9_999_999_999_999),
        consecutive_trips: 1,
        admin_policy: None,
        override_: None,
        policy_version: 1,
    };
    let (mut refused, mut started, mut lost_total) = (0, 0, 0);
    for case in 0..16 {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let n = 50 + rng.below(150);
        for i in 0..n {
            store.put(record(i)).wait_blocking().unwrap();
        }
        store.close().unwrap();
        let path = dir.path().join(breakerd_core::store::DB_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let offset = rng.below(bytes.len() as u64) as usize;
        let what = match case % 3 {
            0 => {
                let bit = rng.below(8);
                bytes[offset] ^= 1 << bit;
                format!("bit {bit} flipped at offset {offset}")
            }
            1 => {
                bytes.truncate(offset);
                format!("torn at offset {offset}")
            }
            _ => {
                let end = (offset + 4096).min(bytes.len());
                bytes[offset..end].fill(0);
                format!("{} bytes zeroed at offset {offset}", end - offset)
            }
        };
        std::fs::write(&path, &bytes).unwrap();
        match Store::open(dir.path()) {
            Ok((store, loaded)) => {
                started += 1;
                let lost = (0..n)
                    .filter(|&i| !loaded.circuits.contains(&record(i)))
                    .count();
                println!(
                    "case {case}: {what}: started with {} of {n} records; acknowledged writes lost: {lost}",
                    loaded.circuits.len()
                );
                lost_total += lost;
                store.close().unwrap();
            }
            Err(e) => {
                refused += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains(&path.display().to_string()),
                    "the error names the file: {msg}"
                );
                if let StoreError::Damaged { copy, .. } = &e {
                    assert!(
                        std::fs::read(copy).unwrap() == bytes,
                        "case {case}: the copy is the damaged file"
                    );
                } else if let StoreError::Missing { .. } = &e {
                    assert!(bytes.is_empty(), "case {case}: {msg}");
                } else {
                    panic!("case {case}: {what}: not reported as damage: {msg}");
                }
                println!(
                    "case {case}: {what}: refused at start, a copy kept; acknowledged writes lost: 0 (nothing started on the damaged file)"
                );
            }
        }
    }
    println!("torn writes and bit flips: {refused} refused at start, {started} started");
    report("torn writes and bit flips", lost_total, 0);
}
