//! `/v1/embeddings` on the cloud platforms: the client's request checked and normalised
//! (`prepare`), split into the platform's calls (`calls`: the Gemini API's
//! `:batchEmbedContents`, at most 100 texts a call; Vertex AI's `:predict`, 250 instances, one
//! for `gemini-embedding-*`; Bedrock's InvokeModel for Titan, one text a call, and Cohere, 96
//! texts), their answers read (`read`) and put together in OpenAI's shape (`answer`).
//!
//! Usage: Vertex's `statistics.token_count`, Titan's `inputTextTokenCount`, Bedrock's
//! `x-amzn-bedrock-input-token-count` header for Cohere; the Gemini API reports none, so its
//! count is the gateway's estimate (`api::tokens::estimate`) of each text.

use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::adapter::{Untranslatable, bedrock};
use crate::api::RawObject;
use crate::config::{Dialect, ProviderSpec};

/// The normalised request the transport reads: every input a string.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub input: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
}

/// Which embedding API serves a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    GeminiApi,
    Vertex,
    Titan,
    Cohere,
}

impl Platform {
    pub fn of(provider: &ProviderSpec, model: &str) -> Option<Self> {
        match provider.dialect {
            Dialect::Gemini => Some(Self::GeminiApi),
            Dialect::Vertex => Some(Self::Vertex),
            Dialect::Bedrock if model.contains("amazon.titan-embed") => Some(Self::Titan),
            Dialect::Bedrock if model.contains("cohere.embed") => Some(Self::Cohere),
            _ => None,
        }
    }

    fn batch(self, model: &str) -> usize {
        match self {
            Self::GeminiApi => 100,
            Self::Vertex if model.starts_with("gemini-embedding") => 1,
            Self::Vertex => 250,
            Self::Titan => 1,
            Self::Cohere => 96,
        }
    }
}

/// The client's `/v1/embeddings` body, checked, as the transport reads it.
pub fn prepare(request: &RawObject, provider: &ProviderSpec, model: &str) -> Result<Vec<u8>, Untranslatable> {
    if Platform::of(provider, model).is_none() {
        return Err(Untranslatable::new(
            format!(
                "The model `{model}` on Bedrock is not an embedding model served here: use an amazon.titan-embed-* or cohere.embed-* model on /v1/embeddings."
            ),
            "model",
        ));
    }
    let bad = |message: &str, param: &str| Untranslatable::new(message.to_owned(), param);
    let input = match request.parse::<serde_json::Value>("input") {
        Ok(Some(serde_json::Value::String(text))) => vec![text],
        Ok(Some(serde_json::Value::Array(items))) if !items.is_empty() => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(text) => Ok(text),
                _ => Err(bad("This cloud platform embeds text: `input` must be a string or an array of strings (token arrays are not accepted).", "input")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("`input` must be a non-empty string or array of strings.", "input")),
    };
    if input.iter().any(String::is_empty) {
        return Err(bad("`input` must not contain empty strings.", "input"));
    }
    let dimensions = request
        .parse::<u32>("dimensions")
        .map_err(|_| bad("`dimensions` must be a positive integer.", "dimensions"))?;
    let encoding_format = request.parse::<String>("encoding_format").ok().flatten();
    if encoding_format.as_deref().is_some_and(|f| f != "float" && f != "base64") {
        return Err(bad("`encoding_format` must be `float` or `base64`.", "encoding_format"));
    }
    let body = EmbedRequest { model: model.to_owned(), input, dimensions, encoding_format };
    serde_json::to_vec(&body).map_err(|e| bad(&format!("Invalid request body: {e}"), "input"))
}

/// One call: its path, its body, and which inputs it embeds.
#[derive(Debug, PartialEq, Eq)]
pub struct Call {
    pub path: String,
    pub body: Vec<u8>,
    pub inputs: Range<usize>,
}

/// The platform's calls for `request`, in input order.
pub fn calls(platform: Platform, provider: &ProviderSpec, request: &EmbedRequest) -> Vec<Call> {
    let model = request.model.as_str();
    let path = match platform {
        Platform::GeminiApi => {
            let name = if model.contains('/') { model.to_owned() } else { format!("models/{model}") };
            format!("/v1beta/{name}:batchEmbedContents")
        }
        Platform::Vertex => {
            let project = provider.cloud.project.as_deref().unwrap_or_default();
            let location = provider.cloud.location.as_deref().unwrap_or_default();
            format!("/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predict")
        }
        Platform::Titan | Platform::Cohere => bedrock::path(model, false, true),
    };
    let size = platform.batch(model);
    (0..request.input.len())
        .step_by(size)
        .map(|start| {
            let inputs = start..(start + size).min(request.input.len());
            let texts = &request.input[inputs.clone()];
            Call { path: path.clone(), body: call_body(platform, request, texts).to_string().into_bytes(), inputs }
        })
        .collect()
}

fn call_body(platform: Platform, request: &EmbedRequest, texts: &[String]) -> serde_json::Value {
    use serde_json::json;
    let dims = request.dimensions;
    match platform {
        Platform::GeminiApi => {
            let name =
                if request.model.contains('/') { request.model.clone() } else { format!("models/{}", request.model) };
            let requests: Vec<_> = texts
                .iter()
                .map(|text| {
                    let mut one = json!({ "model": name, "content": { "parts": [{ "text": text }] } });
                    if let Some(d) = dims {
                        one["outputDimensionality"] = d.into();
                    }
                    one
                })
                .collect();
            json!({ "requests": requests })
        }
        Platform::Vertex => {
            let instances: Vec<_> = texts.iter().map(|text| json!({ "content": text })).collect();
            match dims {
                Some(d) => json!({ "instances": instances, "parameters": { "outputDimensionality": d } }),
                None => json!({ "instances": instances }),
            }
        }
        Platform::Titan => match dims {
            Some(d) => json!({ "inputText": texts[0], "dimensions": d }),
            None => json!({ "inputText": texts[0] }),
        },
        Platform::Cohere => json!({ "texts": texts, "input_type": "search_document" }),
    }
}

/// The vectors in one call's answer and the tokens it counted (`header_count`: Bedrock's
/// `x-amzn-bedrock-input-token-count`, when sent).
pub fn read(
    platform: Platform,
    body: &[u8],
    texts: &[String],
    header_count: Option<u64>,
) -> Result<(Vec<Vec<f32>>, u64), String> {
    #[derive(Deserialize)]
    struct Values {
        values: Vec<f32>,
    }
    #[derive(Deserialize)]
    struct GeminiAnswer {
        embeddings: Vec<Values>,
    }
    #[derive(Deserialize)]
    struct Statistics {
        #[serde(default)]
        token_count: f64,
    }
    #[derive(Deserialize)]
    struct VertexEmbedding {
        values: Vec<f32>,
        #[serde(default)]
        statistics: Option<Statistics>,
    }
    #[derive(Deserialize)]
    struct Prediction {
        embeddings: VertexEmbedding,
    }
    #[derive(Deserialize)]
    struct VertexAnswer {
        predictions: Vec<Prediction>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TitanAnswer {
        embedding: Vec<f32>,
        #[serde(default)]
        input_text_token_count: Option<u64>,
    }
    #[derive(Deserialize)]
    struct CohereAnswer {
        embeddings: Vec<Vec<f32>>,
    }
    let estimate = || texts.iter().map(|t| crate::api::tokens::estimate(t)).sum::<u64>();
    let bad = |e: serde_json::Error| format!("the platform's embeddings answer: {e}");
    let (vectors, tokens) = match platform {
        Platform::GeminiApi => {
            let answer: GeminiAnswer = serde_json::from_slice(body).map_err(bad)?;
            (answer.embeddings.into_iter().map(|e| e.values).collect(), estimate())
        }
        Platform::Vertex => {
            let answer: VertexAnswer = serde_json::from_slice(body).map_err(bad)?;
            let tokens = answer
                .predictions
                .iter()
                .map(|p| p.embeddings.statistics.as_ref().map_or(0, |s| s.token_count as u64))
                .sum();
            (answer.predictions.into_iter().map(|p| p.embeddings.values).collect(), tokens)
        }
        Platform::Titan => {
            let answer: TitanAnswer = serde_json::from_slice(body).map_err(bad)?;
            let tokens = answer.input_text_token_count.or(header_count).unwrap_or_else(estimate);
            (vec![answer.embedding], tokens)
        }
        Platform::Cohere => {
            let answer: CohereAnswer = serde_json::from_slice(body).map_err(bad)?;
            (answer.embeddings, header_count.unwrap_or_else(estimate))
        }
    };
    if vectors.len() != texts.len() {
        return Err(format!("the platform answered {} embeddings for {} inputs", vectors.len(), texts.len()));
    }
    Ok((vectors, tokens))
}

/// OpenAI's embeddings answer: floats, or base64 of little-endian f32s.
pub fn answer(model: &str, vectors: &[Vec<f32>], tokens: u64, base64: bool) -> Vec<u8> {
    let data: Vec<serde_json::Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                serde_json::Value::String(STANDARD.encode(bytes))
            } else {
                serde_json::json!(vector)
            };
            serde_json::json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let usage = serde_json::json!({ "prompt_tokens": tokens, "total_tokens": tokens });
    serde_json::json!({ "object": "list", "data": data, "model": model, "usage": usage }).to_string().into_bytes()
}

#[cfg(test)]
mod tests;
