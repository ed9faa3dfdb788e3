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
    /// List the account's keys, or every key of every project (for clean-up by age and use).
    List {
        /// The service account: its email, or its unique id.
        #[arg(long, required_unless_present = "all_projects")]
        iam_account: Option<String>,
        /// Every key of every project the caller may see, with its account.
        #[arg(long, conflicts_with = "iam_account")]
        all_projects: bool,
        /// Only keys made longer ago than this: 24h, 90d, 30m, 3600s.
        #[arg(long, value_name = "DURATION", value_parser = super::parse_lifetime)]
        older_than: Option<i64>,
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
