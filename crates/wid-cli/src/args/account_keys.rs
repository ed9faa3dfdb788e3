//! `wid iam service-accounts keys ...`'s arguments, as gcloud's.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// The service account a key command is for, as gcloud names it.
#[derive(Args, Debug, Clone)]
pub struct IamAccountArg {
    /// The service account: its email, or its unique id.
    #[arg(long)]
    pub iam_account: String,
}

#[derive(Subcommand, Debug)]
pub enum AccountKeysCommand {
    /// Create a key and write its key file (mode 0600) to OUTPUT_FILE, which must not exist.
    Create {
        /// Where to write the key file (a new file).
        output_file: PathBuf,
        #[command(flatten)]
        account: IamAccountArg,
    },
    /// Upload the X.509 certificate (PEM) of a key you made; its private key never leaves you.
    Upload {
        /// The certificate, PEM (`openssl req -x509 -newkey rsa:2048 ...` makes one).
        certificate_file: PathBuf,
        #[command(flatten)]
        account: IamAccountArg,
    },
    /// List the account's keys.
    List {
        #[command(flatten)]
        account: IamAccountArg,
    },
    /// Delete a key: it stops working at once.
    Delete {
        /// The key's id, as `keys list` shows it.
        key_id: String,
        #[command(flatten)]
        account: IamAccountArg,
    },
    /// Disable a key: it stops working at once, until enabled.
    Disable {
        /// The key's id, as `keys list` shows it.
        key_id: String,
        #[command(flatten)]
        account: IamAccountArg,
    },
    /// Enable a disabled key.
    Enable {
        /// The key's id, as `keys list` shows it.
        key_id: String,
        #[command(flatten)]
        account: IamAccountArg,
    },
}
