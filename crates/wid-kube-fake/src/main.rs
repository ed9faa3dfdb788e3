//! `wid-kube-fake [--addr HOST:PORT] [--issuer URL]`: the fake Kubernetes API server as a
//! process, for tests outside Rust; the service-account issuer is the base URL unless named. Prints `WID_KUBE_FAKE=<base URL>` once it listens; pods and service accounts
//! are driven through `/_fake/` (see `control.rs`). Serves until killed.

fn main() -> std::process::ExitCode {
    let mut addr = "127.0.0.1:0".to_owned();
    let mut issuer = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            ("--issuer", Some(value)) => issuer = Some(value),
            _ => {
                eprintln!("usage: wid-kube-fake [--addr HOST:PORT] [--issuer URL]");
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
