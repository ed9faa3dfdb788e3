//! Query parameters. Unknown ones are ignored (clients add `bindCertificateFingerprint`,
//! `transport`, …); values arrive encoded or raw (Node sends the audience unencoded).

/// The parsed query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: &str) -> Option<Query> {
        let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok()?;
        Some(Query { pairs })
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `scopes` parameter: a comma- or space-separated list (clients send either);
    /// empty when absent.
    /// Whether `scopes` is longer than wid accepts in a token ([`wid_api::bounds`]).
    pub fn scopes_too_long(&self) -> bool {
        self.get("scopes")
            .is_some_and(|s| s.len() > wid_api::bounds::MAX_SCOPE_BYTES)
    }

    pub fn scopes(&self) -> Vec<String> {
        self.get("scopes")
            .map(|s| {
                s.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A boolean parameter: `true`, `1`, `yes`, `on` (any case), or present without a value.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| {
            v.is_empty()
                || ["true", "1", "yes", "on"]
                    .iter()
                    .any(|t| v.eq_ignore_ascii_case(t))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Query;

    #[test]
    fn flags_and_raw_values() {
        let q =
            Query::parse("recursive&alt=json&audience=https://x.example/p?q=1").expect("parses");
        assert!(q.flag("recursive"));
        assert!(!q.flag("wait_for_change"));
        assert_eq!(q.get("audience"), Some("https://x.example/p?q=1"));
        let q = Query::parse("recursive=TRUE&audience=https%3A%2F%2Fx.example%2Fp%3Fq%3D1")
            .expect("parses");
        assert!(q.flag("recursive"));
        assert_eq!(q.get("audience"), Some("https://x.example/p?q=1"));
        assert_eq!(
            Query::parse("scopes=a,b%20c,,").expect("parses").scopes(),
            ["a", "b", "c"]
        );
        assert!(Query::parse("").expect("parses").scopes().is_empty());
        assert!(
            !Query::parse("recursive=false")
                .expect("parses")
                .flag("recursive")
        );
    }
}
