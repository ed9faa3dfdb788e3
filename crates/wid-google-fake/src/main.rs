//! `wid-google-fake [--addr HOST:PORT] [--config FILE] [--ca-out FILE] [--name HOST]...`: the
//! fake of Google's STS and IAM Credentials as a process, for tests outside Rust. `--config` is
//! the JSON of [`wid_google_fake::Config`] (replaceable later by POSTing it to
//! `/_fake/config`); the CA of its certificate is written to `--ca-out`; the certificate is
//! valid for loopback, the address it listens on, and each `--name`. Prints
//! `WID_GOOGLE_FAKE=<base URL>` once it listens. Serves until killed.

use std::process::ExitCode;

const USAGE: &str =
    "usage: wid-google-fake [--addr HOST:PORT] [--config FILE] [--ca-out FILE] [--name HOST]...";

struct Args {
    addr: std::net::SocketAddr,
    config: wid_google_fake::Config,
    ca_out: Option<std::path::PathBuf>,
    names: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        config: wid_google_fake::Config::default(),
        ca_out: None,
        names: Vec::new(),
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--addr" => {
                args.addr = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not HOST:PORT"))?;
            }
            "--config" => {
                let text = std::fs::read_to_string(&value).map_err(|e| format!("{value}: {e}"))?;
                args.config = serde_json::from_str(&text).map_err(|e| format!("{value}: {e}"))?;
            }
            "--ca-out" => args.ca_out = Some(value.into()),
            "--name" => args.names.push(value),
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("wid-google-fake: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wid-google-fake: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("wid-google-fake: cannot listen on {}: {e}", args.addr);
                return ExitCode::FAILURE;
            }
        };
        let fake = wid_google_fake::GoogleFake::start_on(listener, args.config, &args.names);
        if let Some(path) = &args.ca_out
            && let Err(e) = std::fs::write(path, fake.ca_pem())
        {
            eprintln!("wid-google-fake: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("WID_GOOGLE_FAKE={}", fake.url());
        std::future::pending::<()>().await;
        ExitCode::SUCCESS
    })
}
