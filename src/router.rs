//! Routing: the client's model name → the ordered deployments that may serve it, after checking
//! that the caller's team may use it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::Principal;
use crate::config::{Config, DeploymentSpec, ModelSpec, ProviderSpec};
use crate::error::GatewayError;

pub struct Router {
    models: BTreeMap<String, ModelSpec>,
    default_backend: Option<Arc<ProviderSpec>>,
}

/// Where one request may go, in the order to try.
#[derive(Debug, Clone)]
pub struct Route {
    pub deployments: Vec<DeploymentSpec>,
}

impl Router {
    pub fn new(config: &Config) -> Self {
        Self {
            models: config.models.clone(),
            default_backend: config.default_backend.clone(),
        }
    }

    pub fn route(&self, principal: &Principal, model: &str) -> Result<Route, GatewayError> {
        let deployments = match (self.models.get(model), &self.default_backend) {
            (Some(spec), _) => spec.deployments.clone(),
            (None, Some(provider)) => vec![DeploymentSpec {
                provider: provider.clone(),
                model: model.to_owned(),
                id: format!("{}/{}", provider.name, model),
            }],
            (None, None) => {
                return Err(GatewayError::ModelNotFound(format!(
                    "The model `{model}` does not exist."
                )));
            }
        };
        if !principal.policy.allows(model) {
            return Err(GatewayError::ModelNotAllowed(format!(
                "Team `{}` is not allowed to use the model `{model}`.",
                principal.team
            )));
        }
        Ok(Route { deployments })
    }

    /// Client-facing model names the team may use, for `GET /v1/models`.
    pub fn visible_models<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.models
            .keys()
            .map(String::as_str)
            .filter(|name| principal.policy.allows(name))
    }
}
