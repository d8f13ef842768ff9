//! The label sets of the gateway's metric families, one type per set of label names: a family
//! can only be given the labels it is exported with. Values that come from the configuration
//! (models, deployments, teams) are shared `Arc<str>`s; the others are the gateway's own words.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;

/// A family with one label whose values are the gateway's own words (`reason="endpoint"`).
macro_rules! one_label {
    ($(#[$doc:meta])* $name:ident, $field:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub struct $name {
            pub $field: &'static str,
        }

        impl From<&'static str> for $name {
            fn from($field: &'static str) -> Self {
                Self { $field }
            }
        }
    };
}

one_label!(
    /// Why: a bypass, a refusal, a drop.
    Reason,
    reason
);
one_label!(
    /// How something ended: a stream, a cache store, a semantic comparison.
    Outcome,
    outcome
);
one_label!(
    /// The Valkey-down policy that decided a limit check.
    Policy,
    policy
);
one_label!(
    /// Where a shared-limit decision was made.
    DecidedBy,
    decided_by
);
one_label!(
    /// A cache hit's kind (exact, semantic).
    Kind,
    kind
);
one_label!(
    /// A cache tier.
    Tier,
    tier
);
one_label!(
    /// A cache operation on Valkey.
    Op,
    op
);
one_label!(
    /// How a bearer JWT was decided.
    Verdict,
    result
);

/// `llm_requests_total`: the HTTP status (0 when not a valid code) and the client-facing model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusModel {
    pub status: u16,
    pub model: Arc<str>,
}

/// A client-facing model: a configured name or `other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Model {
    pub model: Arc<str>,
}

/// `llm_gateway_tokens_total`: the token type, the model, and the team (empty unless enabled).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tokens {
    pub r#type: &'static str,
    pub model: Arc<str>,
    pub team: Arc<str>,
}

/// `gen_ai_client_token_usage`, after the GenAI semantic conventions' attribute names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenAiTokens {
    pub gen_ai_token_type: &'static str,
    pub gen_ai_request_model: Arc<str>,
}

/// A deployment: a configured id, or `<provider>/other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Deployment {
    pub deployment: Arc<str>,
}

/// An upstream attempt: the deployment and how the attempt ended (`ok` or an error's label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Attempt {
    pub deployment: Arc<str>,
    pub outcome: &'static str,
}

/// A CLI backend session event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Session {
    pub provider: Arc<str>,
    pub status: &'static str,
}
