//! breakerctl over TLS with tokens: the built binary against a coordinator
//! served in-process with `[tls]` and `[auth]` (certificates made at test
//! time with rcgen).

use std::{
    net::IpAddr,
    path::Path,
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use breakerd::{
    app,
    config::{Cli, Config, FileConfig},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use tokio::sync::oneshot;

const ADMIN: &str = "admin-token-ctl-0123456789";
const DATA: &str = "data-token-ctl-0123456789";

/// Writes a CA and a `localhost` server certificate into `dir`; returns
/// the `[tls]` table and the CA path.
fn certificates(dir: &Path) -> (String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "breakerctl test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (c, k, a) = (
        write("server.pem", &cert.pem()),
        write("server.key", &key.serialize_pem()),
        write("ca.pem", &ca.pem()),
    );
    (format!("[tls]\ncert_path = {c:?}\nkey_path = {k:?}\n"), a)
}

fn run(endpoint: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_breakerctl"));
    cmd.args([
        "--endpoint",
        endpoint,
        "--actor",
        "e2e@tls",
        "--timeout",
        "10s",
    ])
    .args(args)
    .env_remove("BREAKERCTL_ENDPOINT")
    .env_remove("BREAKERD_TOKEN")
    .env_remove("BREAKERCTL_TLS_CA")
    .env_remove("BREAKERCTL_TLS_CERT")
    .env_remove("BREAKERCTL_TLS_KEY")
    .stdin(Stdio::null());
    if let Some(t) = token {
        // Through the environment, as operators should.
        cmd.env("BREAKERD_TOKEN", t);
    }
    cmd.output().expect("run breakerctl")
}

#[test]
fn breakerctl_speaks_tls_and_sends_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = certificates(dir.path());
    let toml = format!(
        "[server]\nshutdown_drain_ms = 200\n[store]\npath = \"none\"\n[http]\nlisten = \"off\"\n\
         [auth]\nadmin_token = {ADMIN:?}\ndata_token = {DATA:?}\n{tls}"
    );
    let config = Config::from_file(FileConfig::parse(&toml).unwrap(), &Cli::default()).unwrap();

    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            app::serve(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let https = format!("https://{addr}");
    let tls_args = ["--tls-ca", ca.as_str(), "--tls-domain", "localhost"];
    let force = |token| {
        let mut args = tls_args.to_vec();
        args.extend(["force-open", "payments", "--reason", "tls test"]);
        run(&https, token, &args)
    };

    let out = force(Some(ADMIN));
    assert!(out.status.success(), "{out:?}");
    let out = force(Some(DATA));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"),
        "{out:?}"
    );
    let out = force(None);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
        "{out:?}"
    );
    // Without --tls-ca an https endpoint is a usage error, and plaintext
    // against the TLS port does not get an answer.
    let out = run(&https, Some(ADMIN), &["get", "payments"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(&format!("http://{addr}"), Some(ADMIN), &["get", "payments"]);
    assert!(!out.status.success(), "{out:?}");
    let mut args = tls_args.to_vec();
    args.extend(["get", "payments", "--json"]);
    let out = run(&https, Some(ADMIN), &args);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FORCED_OPEN")
            || String::from_utf8_lossy(&out.stdout).contains("forced_open"),
        "{out:?}"
    );

    let _ = stop.send(());
    server.join().unwrap();
}
