//! How a failed command tells the user: what went wrong, once, and what to try.

use std::fmt;

/// What to try, attached to an error as its outermost context.
#[derive(Debug)]
pub struct Hint(pub String);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `error`, with a hint to choose another address with `flag` when its cause is an address in
/// use.
pub fn if_in_use(error: anyhow::Error, flag: &str) -> anyhow::Error {
    let in_use = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    });
    if !in_use {
        return error;
    }
    error.context(Hint(format!(
        "another process listens there: is another wid (`wid dev`, `wid iam serve`, `wid \
         metadata serve`) running? Stop it, or choose another address with {flag} (port 0 picks a \
         free one)"
    )))
}

/// `ERROR: ` and the chain of causes, each said once: a cause whose text its outer message
/// already quotes is left out (thiserror messages often quote their source). A hint comes on a
/// line of its own.
pub fn render(error: &anyhow::Error) -> String {
    let hint = error.downcast_ref::<Hint>();
    let mut causes = error.chain().skip(usize::from(hint.is_some()));
    let mut message = causes.next().map(|c| c.to_string()).unwrap_or_default();
    for cause in causes {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    match hint {
        Some(hint) => format!("ERROR: {message}\nhint: {hint}"),
        None => format!("ERROR: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that quotes its source, as `#[error("...: {source}")]` does.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl fmt::Display for Quoting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "cannot listen on 127.0.0.1:8080: {}", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once_and_an_address_in_use_gets_a_hint() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let text = io.to_string();
        let error = if_in_use(Quoting(io).into(), "--iam-addr");
        let rendered = render(&error);
        assert_eq!(rendered.matches(&text).count(), 1, "{rendered}");
        assert!(rendered.starts_with("ERROR: cannot listen on 127.0.0.1:8080: "));
        assert!(
            rendered.contains("\nhint: ") && rendered.contains("--iam-addr"),
            "{rendered}"
        );
    }

    #[test]
    fn other_errors_get_no_hint() {
        let error = if_in_use(anyhow::anyhow!("no such file"), "--addr");
        assert_eq!(render(&error), "ERROR: no such file");
        let chained = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render(&chained), "ERROR: outer: inner");
    }
}
