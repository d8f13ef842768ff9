//! Who is calling, as every stage after authentication sees it: the team, a loggable key id, the
//! team's policy and the credential's own grant. Made by `auth`; read by the limits, the router,
//! the cache and the CLI pools.

use std::sync::Arc;

use crate::config::limits::Limits;
use crate::config::{self, TeamPolicy};

/// Who is calling: the team, a loggable key id, the team's policy and the credential's own grant.
#[derive(Debug, Clone)]
pub struct Principal {
    pub team: Arc<str>,
    pub key_id: Arc<str>,
    pub policy: Arc<TeamPolicy>,
    pub grant: Arc<Grant>,
}

impl Principal {
    /// Whether the team may use `model` and the credential does not narrow it away.
    pub fn allows(&self, model: &str) -> bool {
        self.policy.allows(model)
            && self.grant.models.as_ref().is_none_or(|globs| globs.iter().any(|g| config::glob_match(g, model)))
    }
}

/// What one credential carries beyond its team.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The subject its own limits are counted under: `k:<key id>` or `u:<token subject id>`.
    pub subject: Arc<str>,
    pub limits: Limits,
    /// Narrows the team's models (globs).
    pub models: Option<Vec<String>>,
    /// Unix seconds from which the credential is refused.
    pub expires_at: Option<u64>,
}
