//! The gateway's own count of what a request used, for requests whose upstream reported no usage
//! or only part of it (a stream cut short, a client gone before the answer). The limits'
//! settlement charges this count, and metering's events add up to it (`Pipeline::lines_of`
//! counts with the same tokenizer and the same rules): a request costs the same tokens in both.

use bytes::Bytes;

use super::count::{self, ENCODINGS, Tokenizers};
use super::{Deployments, EstimateInput, output_tokens};
use crate::api::Usage;
use crate::config::Config;
use crate::config::metering::DEFAULT_TOKENIZER;
use crate::ctx::{Endpoint, Generated, LocalCount};

/// Tokenizers by deployment, as metering chooses them (the tiktoken encodings are loaded on
/// first use, so a gateway that never counts never loads one).
pub struct Counter {
    deployments: Deployments,
    tokenizers: Tokenizers,
}

impl Counter {
    pub fn new(config: &Config) -> Result<Self, String> {
        let (tokenizers, default) = match &config.metering {
            Some(m) => (m.tokenizers.clone(), m.default_tokenizer.clone()),
            None => (Default::default(), DEFAULT_TOKENIZER.to_owned()),
        };
        let deployments = Deployments::with_tokenizers(config, tokenizers, default);
        let tokenizers = Tokenizers::load(deployments.tokenizer_specs())?;
        Ok(Self { deployments, tokenizers })
    }
}

impl LocalCount for Counter {
    fn usage(
        &self,
        deployment: &str,
        endpoint: Endpoint,
        body: &Bytes,
        generated: Option<&Generated>,
        reported: Option<&Usage>,
    ) -> Usage {
        let facts = self.deployments.facts(deployment);
        let Some(tokenizer) = self.tokenizers.get(&facts.tokenizer).or_else(|| self.tokenizers.get(ENCODINGS[0]))
        else {
            return reported.copied().unwrap_or_default();
        };
        let input = EstimateInput { endpoint, body: body.clone(), generated: generated.cloned() };
        let counted = output_tokens(&input, &tokenizer);
        match reported {
            // The upstream's input counts are exact; its output count never came (or only its
            // first figure): what was generated, never below what it had reported.
            Some(usage) => {
                let completion = counted.max(usage.completion_tokens);
                Usage {
                    completion_tokens: completion,
                    total_tokens: usage.prompt_tokens + completion,
                    completion_tokens_details: None,
                    ..*usage
                }
            }
            None => {
                let prompt = count::prompt_tokens(body, &tokenizer);
                Usage {
                    prompt_tokens: prompt,
                    completion_tokens: counted,
                    total_tokens: prompt + counted,
                    ..Default::default()
                }
            }
        }
    }
}
