//! breakerctl end to end: the built `breakerctl` binary against a real
//! coordinator served in-process on 127.0.0.1:0 (the same `serve` the
//! `breakerd` binary runs), checking both what it prints and that the
//! coordinator's state really changed.
//!
//! Nothing sleeps: each breakerctl run is a complete request/answer, and the
//! watch test waits for output lines with a deadline.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use breakerd::{app, config::Config};
use serde_json::Value;
use tokio::sync::oneshot;

/// How long to wait for the coordinator to start or for a watch line.
const DEADLINE: Duration = Duration::from_secs(20);
const ACTOR: &str = "e2e@breakerctl-test";

/// A coordinator on its own runtime thread, stopped when dropped.
struct Coordinator {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Coordinator {
    fn start() -> Self {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let config = Config {
                    shutdown_drain: Duration::from_millis(200),
                    // In memory: tests never share a store.
                    store: None,
                    ..Config::default()
                };
                app::serve(config, listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            });
        });
        let addr = addr_rx
            .recv_timeout(DEADLINE)
            .expect("coordinator did not bind in time");
        Coordinator {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs breakerctl against this coordinator.
    fn ctl(&self, args: &[&str]) -> Output {
        run_ctl(&self.endpoint(), args)
    }

    /// Runs breakerctl and insists that it succeeded.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "breakerctl {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs breakerctl with `--json` and parses its document.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("breakerctl {args:?}: bad JSON ({e}): {text}"))
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ctl_command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_breakerctl"));
    cmd.args(["--endpoint", endpoint, "--actor", ACTOR])
        .args(args)
        .env_remove("BREAKERCTL_ENDPOINT")
        .env_remove("BREAKERD_TOKEN")
        .stdin(Stdio::null());
    cmd
}

fn run_ctl(endpoint: &str, args: &[&str]) -> Output {
    ctl_command(endpoint, args)
        .output()
        .expect("run breakerctl")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn operates_circuits_with_tables_and_json() {
    let c = Coordinator::start();
    let name = "e2e.payments:v1";

    // force-open creates the circuit and says what it did.
    let line = c.ok(&[
        "force-open",
        name,
        "--reason",
        "provider outage",
        "--expires",
        "10m",
    ]);
    assert!(line.starts_with(&format!("{name}: ")), "{line}");
    assert!(
        line.contains(&format!(
            "override forced_open by {ACTOR} (provider outage) lapses in"
        )),
        "{line}"
    );

    // get --json shows the override as the coordinator holds it.
    let detail = c.json(&["get", name]);
    assert_eq!(detail["name"], name);
    assert_eq!(detail["override"]["kind"], "forced_open");
    assert_eq!(detail["override"]["actor"], ACTOR);
    assert_eq!(detail["override"]["reason"], "provider outage");
    let expires = detail["override"]["expires_in_ms"].as_u64().unwrap();
    assert!(expires > 0 && expires <= 600_000, "{detail}");
    let generation = detail["generation"].as_u64().unwrap();
    assert!(detail["counters"].is_object(), "{detail}");
    assert!(detail["history"].is_array(), "{detail}");

    // get (table) shows the same.
    let page = c.ok(&["get", name]);
    assert!(page.contains(&format!("name:        {name}")), "{page}");
    assert!(
        page.contains(&format!("override:    forced_open by {ACTOR}, lapses in")),
        "{page}"
    );
    assert!(page.contains("  consecutive_failures"), "{page}");
    assert!(page.contains("counters:"), "{page}");

    // A token is sent as metadata; a server without auth ignores it.
    let with_token = c.ok(&["--token", "s3cret", "get", name]);
    assert!(with_token.contains(name));

    // set-policy changes only the given fields, and the version moves.
    let before = detail["policy_version"].as_u64().unwrap();
    let changed = c.json(&[
        "set-policy",
        name,
        "--reason",
        "tune",
        "consecutive_failures=3",
        "open_base_ms=30s",
        "degraded_mode=fail_closed",
    ]);
    assert_eq!(changed["policy"]["consecutive_failures"], 3);
    assert_eq!(changed["policy"]["open_base_ms"], 30_000);
    assert_eq!(changed["policy"]["degraded_mode"], "fail_closed");
    assert_eq!(
        changed["policy"]["half_open_max_probes"],
        detail["policy"]["half_open_max_probes"]
    );
    assert!(
        changed["policy_version"].as_u64().unwrap() > before,
        "{changed}"
    );
    let text = c.ok(&[
        "set-policy",
        name,
        "--reason",
        "tune again",
        "successes_to_close=2",
    ]);
    assert!(text.contains("successes_to_close        2"), "{text}");
    assert_eq!(c.json(&["get", name])["policy"]["successes_to_close"], 2);

    // An invalid policy is the server's INVALID_ARGUMENT, shown with its code.
    let out = c.ctl(&["set-policy", name, "--reason", "oops", "open_jitter=5"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("breakerctl: breakerd answered INVALID_ARGUMENT: "),
        "{err}"
    );
    assert_eq!(
        c.json(&["get", name])["policy"]["consecutive_failures"],
        3,
        "unchanged"
    );

    // An unknown key never reaches the server.
    let out = c.ctl(&[
        "set-policy",
        name,
        "--reason",
        "oops",
        "consecutive_failure=3",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown policy key \"consecutive_failure\"")
    );

    // list, in both forms.
    let list = c.json(&["list"]);
    let names: Vec<&str> = list["circuits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&name), "{list}");
    let table = c.ok(&["list", "--prefix", "e2e.pay"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("NAME "), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(name) && row.contains("forced_open"),
        "{table}"
    );
    assert_eq!(lines.next(), Some("1 of 1 matching circuit"), "{table}");

    // clear removes the override.
    let line = c.ok(&["clear", name, "--reason", "provider back"]);
    assert!(line.contains("no override"), "{line}");
    let detail = c.json(&["get", name]);
    assert!(detail["override"].is_null(), "{detail}");
    assert!(
        detail["generation"].as_u64().unwrap() > generation,
        "{detail}"
    );

    // reset: CLOSED, a new generation.
    let generation = detail["generation"].as_u64().unwrap();
    let reset = c.json(&["reset", name, "--reason", "fresh start"]);
    assert_eq!(reset["state"], "closed");
    assert!(
        reset["generation"].as_u64().unwrap() > generation,
        "{reset}"
    );

    // delete, then it is gone: NOT_FOUND with exit code 1.
    assert_eq!(
        c.ok(&["delete", name, "--reason", "retired"]),
        format!("{name}: deleted\n")
    );
    let out = c.ctl(&["get", name]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("breakerctl: breakerd answered NOT_FOUND: ")
    );
    let out = c.ctl(&["delete", name, "--reason", "again", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // delete --json
    c.ok(&["disable", "e2e.shadow", "--reason", "shadow mode"]);
    assert_eq!(
        c.json(&["get", "e2e.shadow"])["override"]["kind"],
        "disabled"
    );
    let deleted = c.json(&["delete", "e2e.shadow", "--reason", "done"]);
    assert_eq!(
        deleted,
        serde_json::json!({"name": "e2e.shadow", "deleted": true})
    );

    // An invalid name is the server's INVALID_ARGUMENT.
    let out = c.ctl(&["force-closed", "bad name!", "--reason", "r"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_ARGUMENT"));
}

#[test]
fn list_follows_pages_filters_and_limits() {
    let c = Coordinator::start();
    for i in 0..5 {
        c.ok(&[
            "force-closed",
            &format!("e2e.page.{i}"),
            "--reason",
            "fixture",
        ]);
    }
    c.ok(&["force-open", "e2e.other", "--reason", "fixture"]);

    let names = |v: &Value| -> Vec<String> {
        v["circuits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = c.json(&["list", "--prefix", "e2e.page.", "--page-size", "2"]);
    assert_eq!(
        names(&all),
        (0..5).map(|i| format!("e2e.page.{i}")).collect::<Vec<_>>(),
        "{all}"
    );
    assert_eq!(all["total_matching"], 5);

    let some = c.json(&[
        "list",
        "--prefix",
        "e2e.page.",
        "--page-size",
        "2",
        "--limit",
        "3",
    ]);
    assert_eq!(names(&some), ["e2e.page.0", "e2e.page.1", "e2e.page.2"]);
    assert_eq!(some["total_matching"], 5);

    // The state filter is applied by the server: what comes back is in it.
    for state in ["closed", "open", "half-open"] {
        let v = c.json(&["list", "--prefix", "e2e.", "--state", state]);
        let want = state.replace('-', "_");
        for circuit in v["circuits"].as_array().unwrap() {
            assert_eq!(circuit["state"], want.as_str(), "{v}");
        }
    }
    let closed = c.json(&["list", "--prefix", "e2e.page.", "--state", "closed"]);
    assert_eq!(closed["total_matching"], 5, "{closed}");

    let none = c.ok(&["list", "--prefix", "nothing-here"]);
    assert_eq!(none, "0 of 0 matching circuits\n");
}

/// Reads a child's stdout lines on a thread, so the test can wait for each
/// with a deadline instead of blocking forever.
struct Lines {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    fn spawn(endpoint: &str, args: &[&str]) -> Self {
        let mut child = ctl_command(endpoint, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn breakerctl watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx }
    }

    fn next(&mut self) -> String {
        self.rx
            .recv_timeout(DEADLINE)
            .expect("no watch output before the deadline")
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_prints_snapshot_then_changes() {
    let c = Coordinator::start();
    let name = "e2e.watched";

    let mut json = Lines::spawn(&c.endpoint(), &["watch", name, "--json"]);
    let first: Value = serde_json::from_str(&json.next()).unwrap();
    assert_eq!(first["initial"], true);
    assert_eq!(first["name"], name);
    assert!(first["override"].is_null(), "{first}");

    // Watching everything: its initial event holds the circuit the first
    // watcher created, which also shows that it is subscribed.
    let mut human = Lines::spawn(&c.endpoint(), &["watch"]);
    let line = human.next();
    assert!(
        line.starts_with("snapshot  e2e.watched: CLOSED generation "),
        "{line}"
    );
    assert!(line.ends_with(", no override"), "{line}");

    c.ok(&["force-open", name, "--reason", "watch me"]);

    let change: Value = serde_json::from_str(&json.next()).unwrap();
    assert_eq!(change["initial"], false, "{change}");
    assert_eq!(change["name"], name);
    assert_eq!(change["override"]["kind"], "forced_open", "{change}");
    let line = human.next();
    assert!(line.starts_with("change    e2e.watched: "), "{line}");
    assert!(
        line.contains(&format!("override forced_open by {ACTOR} (watch me)")),
        "{line}"
    );

    c.ok(&["delete", name, "--reason", "done"]);
    loop {
        let v: Value = serde_json::from_str(&json.next()).unwrap();
        if v["deleted"] == true {
            assert_eq!(v["name"], name);
            break;
        }
    }
}

#[test]
fn coordinator_down_is_one_clear_line() {
    // A port that was just free: bind it, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    for args in [
        &["list"][..],
        &["get", "x", "--json"],
        &["force-open", "x", "--reason", "r"],
        &["watch"],
    ] {
        let out = run_ctl(&endpoint, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("breakerctl: cannot reach breakerd at {endpoint}: connection refused\n"),
            "{args:?}"
        );
    }
}
