//! `wid dev`'s flags, resolved into [`wid_dev::Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use wid_dev::DEV_PROJECT;

use crate::LogArgs;
use crate::node::{UpstreamSettings, agent_config, dev_node};

pub const LONG_ABOUT: &str = "\
The token service and the metadata server in one process on loopback, bootstrapped for a laptop \
or CI: the project wid-dev, the service account dev-runner@wid-dev.iam.gserviceaccount.com, a \
cluster `dev` whose KSA tokens the agent signs, and the binding of its KSA default/default to \
that account. Callers from 127.0.0.1 are the pod default/wid-dev of that KSA unless --pods \
says otherwise.

It prints, on standard output, the lines to paste in any shell of this machine (Google's \
clients, gcloud with a configuration of its own, `wid iam`), then stays in the foreground, \
logging to standard error, until Ctrl-C (SIGINT) or SIGTERM. A second start with the same data \
directory finds everything in place; delete the directory to start afresh.";

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the metadata server listens (port 0: a free port, printed).
    #[arg(long, default_value = "127.0.0.1:8988")]
    pub metadata_addr: SocketAddr,
    /// Where the token service listens (port 0: a free port, printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub iam_addr: SocketAddr,
    /// wid dev's state, made with mode 0700: the database, the admin token, the agent's issuer
    /// key, and a gcloud configuration of its own; delete it to start afresh [default:
    /// $XDG_DATA_HOME/wid/dev or ~/.local/share/wid/dev].
    #[arg(long, env = "WID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The pods of the node as a JSON file, reloaded when it changes, instead of the one
    /// loopback pod default/default.
    #[arg(long)]
    pub pods: Option<PathBuf>,
    /// The dev project.
    #[arg(long, default_value = DEV_PROJECT)]
    pub project: String,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The settings of `wid dev` for `args`, its data directory resolved.
pub fn settings(args: DevArgs, data_dir: PathBuf) -> anyhow::Result<wid_dev::Config> {
    // The node's settings as `wid metadata serve`'s flags default them; `wid dev` sets its
    // address, project and token service itself.
    let node = dev_node(&args.project)?;
    let upstream = UpstreamSettings {
        sts_url: String::new(),
        iamcredentials_url: String::new(),
        ca_file: None,
        federation: wid_agent::federation::Federation::Gke {
            project_id: args.project.clone(),
        },
    };
    let agent = agent_config(args.metadata_addr, upstream, &node, &args.project, None);
    Ok(wid_dev::Config {
        metadata_addr: args.metadata_addr,
        iam_addr: args.iam_addr,
        data_dir,
        pods: args.pods,
        project: args.project,
        agent,
    })
}
