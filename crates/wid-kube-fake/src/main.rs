//! `wid-kube-fake [--addr HOST:PORT] [--issuer URL] [--pods N --nodes M] [--service-accounts K]`:
//! the fake Kubernetes API server as a process, for tests and benchmarks outside Rust; the
//! service-account issuer is the base URL unless named; `--pods` fills the cluster around
//! `node-0` and `--service-accounts` makes `ksa-0`..`ksa-{K-1}` exist in every namespace. Prints `WID_KUBE_FAKE=<base URL>` once it listens; pods and service accounts
//! are driven through `/_fake/` (see `control.rs`). Serves until killed.

fn main() -> std::process::ExitCode {
    let mut addr = "127.0.0.1:0".to_owned();
    let mut issuer = None;
    let (mut pods, mut nodes, mut accounts) = (0u64, 1u64, 0u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            ("--issuer", Some(value)) => issuer = Some(value),
            ("--pods", Some(value)) if value.parse::<u64>().is_ok() => {
                pods = value.parse().unwrap_or(0)
            }
            ("--nodes", Some(value)) if value.parse::<u64>().is_ok() => {
                nodes = value.parse().unwrap_or(1)
            }
            ("--service-accounts", Some(value)) if value.parse::<u64>().is_ok() => {
                accounts = value.parse().unwrap_or(0);
            }
            _ => {
                eprintln!(
                    "usage: wid-kube-fake [--addr HOST:PORT] [--issuer URL] [--pods N --nodes M] [--service-accounts K]"
                );
                return std::process::ExitCode::from(2);
            }
        }
    }
    let Ok(addr) = addr.parse() else {
        eprintln!("wid-kube-fake: {addr:?} is not HOST:PORT");
        return std::process::ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wid-kube-fake: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let fake = wid_kube_fake::FakeApi::new();
        if let Some(issuer) = &issuer {
            fake.set_issuer(issuer);
        }
        fake.populate(pods, nodes);
        fake.synthetic_service_accounts(accounts);
        match fake.serve_on(addr).await {
            Ok(base) => {
                println!("WID_KUBE_FAKE={base}");
                std::future::pending::<()>().await;
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wid-kube-fake: cannot listen on {addr}: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
