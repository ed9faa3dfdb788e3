//! A validated IAM allow policy and the one decision function, [`is_allowed`].

use std::collections::BTreeMap;

use crate::expr;
use crate::member::{Caller, Member};
use crate::roles::Role;

/// Google's limit on principals across all bindings of one policy.
pub const MAX_MEMBERS: usize = 1500;

/// A binding as it arrives: strings, not yet checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawBinding {
    pub role: String,
    pub members: Vec<String>,
    pub condition: Option<String>,
}

/// A condition on a binding: its text, and its parse in wid's expression subset when it has
/// one. A condition outside the subset is kept but never holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub expression: String,
    parsed: Option<expr::Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub role: Role,
    /// The members as written (what getIamPolicy gives back), each with what it denotes.
    pub members: Vec<(String, Member)>,
    pub condition: Option<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// 1, or 3 when any binding has a condition.
    pub version: i64,
    pub bindings: Vec<Binding>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("Invalid policy version {0}: only versions 0, 1 and 3 are supported.")]
    InvalidVersion(i64),
    #[error("Role {0} is not supported for this resource.")]
    UnknownRole(String),
    #[error("Every binding needs a role.")]
    EmptyRole,
    #[error(transparent)]
    InvalidMember(#[from] crate::member::MemberError),
    #[error("Conditional role bindings need policy version 3; this policy has version {0}.")]
    ConditionNeedsVersion3(i64),
    #[error("Invalid condition expression: it must be 1 to {max} characters.", max = expr::MAX_LEN)]
    InvalidCondition,
    #[error(
        "A policy may have at most {MAX_MEMBERS} members across its bindings; this one has {0}."
    )]
    TooManyMembers(usize),
}

impl Policy {
    /// Validates and normalises a policy as setIamPolicy receives it: the version is 0, 1 or 3,
    /// roles are supported, members parse, conditions need version 3. Bindings without members
    /// are dropped, duplicate members removed, and bindings of the same role and condition merged,
    /// keeping first-seen order.
    pub fn validate(version: i64, raw: &[RawBinding]) -> Result<Policy, PolicyError> {
        if ![0, 1, 3].contains(&version) {
            return Err(PolicyError::InvalidVersion(version));
        }
        let mut bindings: Vec<Binding> = Vec::new();
        let mut total = 0;
        for rb in raw {
            if rb.role.is_empty() {
                return Err(PolicyError::EmptyRole);
            }
            let role =
                Role::parse(&rb.role).ok_or_else(|| PolicyError::UnknownRole(rb.role.clone()))?;
            let condition = match &rb.condition {
                None => None,
                Some(text) => {
                    if version != 3 {
                        return Err(PolicyError::ConditionNeedsVersion3(version));
                    }
                    if text.trim().is_empty() || text.len() > expr::MAX_LEN {
                        return Err(PolicyError::InvalidCondition);
                    }
                    Some(Condition {
                        expression: text.clone(),
                        parsed: expr::parse(text).ok(),
                    })
                }
            };
            let members = rb
                .members
                .iter()
                .map(|m| Ok((m.clone(), Member::parse(m)?)))
                .collect::<Result<Vec<_>, PolicyError>>()?;
            let target = match bindings
                .iter_mut()
                .find(|b| b.role == role && b.condition == condition)
            {
                Some(existing) => existing,
                None => {
                    bindings.push(Binding {
                        role,
                        members: Vec::new(),
                        condition,
                    });
                    let last = bindings.len() - 1;
                    &mut bindings[last]
                }
            };
            for (text, member) in members {
                if !target.members.iter().any(|(_, m)| *m == member) {
                    target.members.push((text, member));
                    total += 1;
                }
            }
        }
        if total > MAX_MEMBERS {
            return Err(PolicyError::TooManyMembers(total));
        }
        bindings.retain(|b| !b.members.is_empty());
        let version = if bindings.iter().any(|b| b.condition.is_some()) {
            3
        } else {
            1
        };
        Ok(Policy { version, bindings })
    }

    /// The bindings back as strings, for rendering.
    pub fn to_raw(&self) -> Vec<RawBinding> {
        self.bindings
            .iter()
            .map(|b| RawBinding {
                role: b.role.name().to_owned(),
                members: b.members.iter().map(|(text, _)| text.clone()).collect(),
                condition: b.condition.as_ref().map(|c| c.expression.clone()),
            })
            .collect()
    }
}

/// What a condition may read besides the caller: the resource's name.
#[derive(Clone, Debug, Default)]
pub struct RequestContext<'a> {
    pub resource_name: &'a str,
}

impl Condition {
    fn holds(&self, ctx: &RequestContext<'_>) -> bool {
        let Some(parsed) = &self.parsed else {
            return false;
        };
        let resource = serde_json::json!({ "name": ctx.resource_name });
        let vars = BTreeMap::from([("resource", &resource)]);
        expr::holds(parsed, &vars)
    }
}

/// Whether `caller` holds `permission` through any of `policies` (the resource's own and those it
/// inherits from). The bootstrap admin holds every permission wid knows; everyone else needs a binding
/// whose role grants the permission, whose members include the caller, and whose condition, if
/// any, holds.
pub fn is_allowed(
    policies: &[&Policy],
    caller: &Caller,
    permission: &str,
    ctx: &RequestContext<'_>,
) -> bool {
    if *caller == Caller::BootstrapAdmin {
        return crate::roles::is_known_permission(permission);
    }
    policies.iter().flat_map(|p| &p.bindings).any(|b| {
        b.role.grants(permission)
            && b.members.iter().any(|(_, m)| m.matches(caller))
            && b.condition.as_ref().is_none_or(|c| c.holds(ctx))
    })
}

#[cfg(test)]
mod tests;
