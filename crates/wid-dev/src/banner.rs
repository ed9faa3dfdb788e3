//! What `wid dev` prints: comments, and shell lines that work in any directory of any shell of
//! this machine, with a gcloud configuration of wid dev's own.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use wid_agent::pods::{Caller, Pod, Resolver};

use crate::LOOPBACK;
use crate::bootstrap::{Bootstrapped, WORKLOAD_IDENTITY_USER};

/// A gcloud configuration directory of wid dev's own, for `CLOUDSDK_CONFIG`: the user's own
/// holds state that wins over any metadata server (an active account of theirs, `core/account`,
/// a cached "not on GCE"), and stays as it is.
pub(crate) fn gcloud_config(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("gcloud");
    wid_runtime::private_files::ensure_private_dir(&dir)?;
    // gcloud keeps for ten minutes whether it found a metadata server (the file `gce`, "True"
    // or "False"); a "False" from a run while wid dev was down would outlive this start. Without
    // the file, gcloud asks the metadata server again.
    match std::fs::remove_file(dir.join("gce")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("removing gcloud's cache {}/gce", dir.display()));
        }
    }
    Ok(dir)
}

/// Variables of the user's shell that would make gcloud or google-auth use other credentials
/// than the metadata server's, or none: an account, a token or key file, impersonation, or the
/// metadata check turned off.
const OVERRIDING: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "NO_GCE_CHECK",
    "CLOUDSDK_CORE_ACCOUNT",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_CORE_CHECK_GCE_METADATA",
    "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    "CLOUDSDK_AUTH_IMPERSONATE_SERVICE_ACCOUNT",
    "CLOUDSDK_AUTH_DISABLE_CREDENTIALS",
    "CLOUDSDK_AUTH_AUTHORIZATION_TOKEN_FILE",
];

/// Those of [`OVERRIDING`] that are set.
pub(crate) fn overriding_variables(is_set: impl Fn(&str) -> bool) -> Vec<&'static str> {
    OVERRIDING.iter().copied().filter(|v| is_set(v)).collect()
}

/// Who the callers from 127.0.0.1 are, in words.
pub(crate) fn loopback_caller(
    resolver: &dyn Resolver,
    pods: Option<&Path>,
    dev: &Bootstrapped,
) -> String {
    let from = match pods {
        Some(path) => format!(" of {}", path.display()),
        None => String::new(),
    };
    match resolver.resolve(LOOPBACK) {
        Caller::Pod(pod) => format!(
            "Callers from 127.0.0.1 are the pod {}/{}{from}, KSA {}/{}, {}.",
            pod.namespace,
            pod.name,
            pod.namespace,
            pod.service_account_name,
            account_of(&pod, dev)
        ),
        Caller::Unknown => format!(
            "No pod{from} has the address 127.0.0.1: clients on this machine are refused until one has (the file is read again when it changes)."
        ),
        Caller::Ambiguous(pods) => format!(
            "Several pods{from} have the address 127.0.0.1 ({}): clients on this machine are refused.",
            pods.join(", ")
        ),
    }
}

/// The account a pod's tokens are for, and whether wid dev knows it bound.
fn account_of(pod: &Pod, dev: &Bootstrapped) -> String {
    let dev_ksa = pod.namespace == "default" && pod.service_account_name == "default";
    match pod.gsa() {
        Some(gsa) if gsa == dev.email && dev_ksa && dev.bound => format!("bound to {gsa}"),
        Some(gsa) if gsa == dev.email && dev_ksa => format!(
            "annotated with {gsa} but no longer bound to it: tokens are refused until `wid iam service-accounts add-iam-policy-binding {gsa} --role {WORKLOAD_IDENTITY_USER} --member '{}'`",
            dev.member
        ),
        Some(gsa) => format!(
            "annotated with {gsa} (bind it with `wid iam service-accounts add-iam-policy-binding`)"
        ),
        None => "not annotated: it gets the federated token itself".to_owned(),
    }
}

/// What `wid dev` prints on standard output once it answers: comments, and shell lines that
/// work in any directory of any shell of this machine.
pub(crate) struct Banner<'a> {
    pub iam: &'a str,
    pub metadata: SocketAddr,
    pub project: &'a str,
    pub data_dir: &'a Path,
    pub gcloud: &'a Path,
    pub token_file: &'a Path,
    pub loopback: String,
    /// The account wid dev binds default/default to, when that is worth saying.
    pub bound: Option<&'a str>,
    pub unset: Vec<&'static str>,
}

impl Banner<'_> {
    pub fn render(&self) -> String {
        let md = self.metadata;
        let mut out = format!(
            "# wid dev: the token service is at {}, the metadata server at http://{md}; its state is in {}.\n",
            self.iam,
            self.data_dir.display()
        );
        out += &format!("# {}\n", self.loopback);
        if let Some(bound) = self.bound {
            out += &format!(
                "# KSA default/default is bound to {bound}; `wid iam` changes bindings live.\n"
            );
        }
        out += "# For Google's clients and gcloud (a gcloud configuration of wid dev's own: yours is left as it is):\n";
        if !self.unset.is_empty() {
            out += &format!("unset {}\n", self.unset.join(" "));
        }
        out += &format!(
            "export GCE_METADATA_HOST={md} GCE_METADATA_IP={md} GCE_METADATA_ROOT={md} GOOGLE_CLOUD_PROJECT={} CLOUDSDK_CONFIG={}\n",
            sh_quote(self.project),
            sh_quote(&self.gcloud.to_string_lossy())
        );
        out += "# For `wid iam ...`:\n";
        out += &format!(
            "export WID_ENDPOINT={} WID_TOKEN_FILE={}\n",
            self.iam,
            sh_quote(&self.token_file.to_string_lossy())
        );
        out += "# wid dev runs until Ctrl-C; logs go to standard error (--log warn quiets them).\n";
        out
    }
}

/// `text` as one shell word: as it is when it has nothing the shell reads specially, else in
/// single quotes.
pub fn sh_quote(text: &str) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&b));
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver;

    fn banner(unset: Vec<&'static str>, data_dir: &Path) -> String {
        let gcloud = data_dir.join("gcloud");
        let token = data_dir.join("admin-token");
        Banner {
            iam: "http://127.0.0.1:8080",
            metadata: "127.0.0.1:8988".parse().expect("address"),
            project: "wid-dev",
            data_dir,
            gcloud: &gcloud,
            token_file: &token,
            loopback: "Callers from 127.0.0.1 are the pod default/wid-dev.".into(),
            bound: Some("dev-runner@wid-dev.iam.gserviceaccount.com"),
            unset,
        }
        .render()
    }

    #[test]
    fn the_banner_is_comments_and_shell_lines() {
        let out = banner(vec![], Path::new("/home/a/wid"));
        for line in out.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("export "),
                "{line}"
            );
        }
        assert!(out.contains(
            "\nexport GCE_METADATA_HOST=127.0.0.1:8988 GCE_METADATA_IP=127.0.0.1:8988 GCE_METADATA_ROOT=127.0.0.1:8988 GOOGLE_CLOUD_PROJECT=wid-dev CLOUDSDK_CONFIG=/home/a/wid/gcloud\n"
        ));
        assert!(out.contains(
            "\nexport WID_ENDPOINT=http://127.0.0.1:8080 WID_TOKEN_FILE=/home/a/wid/admin-token\n"
        ));
    }

    #[test]
    fn overriding_variables_are_unset_before_the_exports() {
        let set = overriding_variables(|v| {
            matches!(
                v,
                "CLOUDSDK_CORE_ACCOUNT" | "GOOGLE_APPLICATION_CREDENTIALS"
            )
        });
        let out = banner(set, Path::new("/w"));
        let unset = out.find("unset GOOGLE_APPLICATION_CREDENTIALS CLOUDSDK_CORE_ACCOUNT\n");
        let export = out.find("export GCE_METADATA_HOST=");
        assert!(unset.is_some() && unset < export, "{out}");
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        let out = banner(vec![], Path::new("/home/a b/it's"));
        assert!(
            out.contains(r"CLOUDSDK_CONFIG='/home/a b/it'\''s/gcloud'"),
            "{out}"
        );
        assert_eq!(sh_quote("/plain/path-1.2"), "/plain/path-1.2");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn the_loopback_caller_is_told_as_it_is() {
        let email = "dev-runner@wid-dev.iam.gserviceaccount.com";
        let mut dev = Bootstrapped {
            number: "1".into(),
            email: email.into(),
            member: "serviceAccount:wid-dev.svc.id.goog[default/default]".into(),
            bound: true,
        };
        let (fixed, _) = resolver(None, email).expect("resolver");
        let told = loopback_caller(fixed.as_ref(), None, &dev);
        assert!(
            told.contains("pod default/wid-dev, KSA default/default, bound to dev-runner"),
            "{told}"
        );
        dev.bound = false;
        let told = loopback_caller(fixed.as_ref(), None, &dev);
        assert!(
            told.contains("no longer bound") && told.contains("add-iam-policy-binding"),
            "{told}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pods.json");
        std::fs::write(
            &file,
            r#"{"pods": [{"ip": "10.0.0.5", "namespace": "a", "name": "p"}]}"#,
        )
        .expect("write");
        let (pods, _) = resolver(Some(&file), email).expect("resolver");
        let told = loopback_caller(pods.as_ref(), Some(&file), &dev);
        assert!(
            told.starts_with("No pod of ") && told.contains("127.0.0.1"),
            "{told}"
        );
        std::fs::write(
            &file,
            r#"{"pods": [{"ip": "127.0.0.1", "namespace": "a", "name": "p", "serviceAccountName": "k"}]}"#,
        )
        .expect("write");
        let (pods, _) = resolver(Some(&file), email).expect("resolver");
        let told = loopback_caller(pods.as_ref(), Some(&file), &dev);
        assert!(
            told.contains("the pod a/p of ") && told.contains("KSA a/k, not annotated"),
            "{told}"
        );
    }
}
