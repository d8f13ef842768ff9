use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::config::Config;

fn provider(yaml: &str) -> Arc<ProviderSpec> {
    let config = Config::from_yaml(&format!("providers:\n  p: {yaml}\n"), &HashMap::new()).unwrap();
    config.providers["p"].clone()
}

fn request(json: &str, provider: &ProviderSpec, model: &str) -> Result<EmbedRequest, String> {
    let body = prepare(&RawObject::from_slice(json.as_bytes()).unwrap(), provider, model).map_err(|e| e.message)?;
    Ok(serde_json::from_slice(&body).unwrap())
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn inputs_are_strings_and_bad_ones_are_named() {
    let gemini = provider("{ dialect: gemini, api_key_env: NONE }");
    let one = request(
        r#"{"model":"e","input":"hi","dimensions":8,"encoding_format":"base64"}"#,
        &gemini,
        "text-embedding-004",
    );
    let one = one.unwrap();
    assert_eq!(
        (one.input, one.dimensions, one.encoding_format.as_deref()),
        (vec!["hi".to_owned()], Some(8), Some("base64"))
    );
    let tokens = request(r#"{"model":"e","input":[[1,2,3]]}"#, &gemini, "m").unwrap_err();
    assert!(tokens.contains("token arrays are not accepted"), "{tokens}");
    assert!(request(r#"{"model":"e","input":[]}"#, &gemini, "m").unwrap_err().contains("non-empty"));
    assert!(request(r#"{"model":"e","input":"x","encoding_format":"int8"}"#, &gemini, "m").is_err());
    let bedrock = provider("{ dialect: bedrock, region: us-east-1 }");
    let claude = request(r#"{"model":"e","input":"x"}"#, &bedrock, "anthropic.claude-v2").unwrap_err();
    assert!(claude.contains("amazon.titan-embed-* or cohere.embed-*"), "{claude}");
}

#[test]
fn each_platform_gets_its_calls() {
    let texts = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    let embed = |model: &str, n: usize, dimensions: Option<u32>| EmbedRequest {
        model: model.into(),
        input: texts(n),
        dimensions,
        encoding_format: None,
    };
    let gemini = provider("{ dialect: gemini, api_key_env: NONE }");
    let calls = calls(Platform::GeminiApi, &gemini, &embed("text-embedding-004", 150, Some(8)));
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].path.as_str(), calls[1].inputs.clone()),
        ("/v1beta/models/text-embedding-004:batchEmbedContents", 100..150)
    );
    assert_eq!(
        json(&calls[1].body)["requests"][0],
        serde_json::json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "t100"}]}, "outputDimensionality": 8})
    );

    let vertex = provider("{ dialect: vertex, project: pr, location: europe-west4 }");
    let calls = super::calls(Platform::Vertex, &vertex, &embed("text-embedding-005", 3, None));
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].path,
        "/v1/projects/pr/locations/europe-west4/publishers/google/models/text-embedding-005:predict"
    );
    assert_eq!(
        json(&calls[0].body),
        serde_json::json!({"instances": [{"content": "t0"}, {"content": "t1"}, {"content": "t2"}]})
    );
    assert_eq!(super::calls(Platform::Vertex, &vertex, &embed("gemini-embedding-001", 3, None)).len(), 3);

    let bedrock = provider("{ dialect: bedrock, region: us-east-1 }");
    let calls = super::calls(Platform::Titan, &bedrock, &embed("amazon.titan-embed-text-v2:0", 2, Some(256)));
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(json(&calls[1].body), serde_json::json!({"inputText": "t1", "dimensions": 256}));
    let calls = super::calls(Platform::Cohere, &bedrock, &embed("cohere.embed-english-v3", 100, None));
    assert_eq!(calls.iter().map(|c| c.inputs.clone()).collect::<Vec<_>>(), [0..96, 96..100]);
    assert_eq!(
        json(&calls[1].body),
        serde_json::json!({"texts": ["t96", "t97", "t98", "t99"], "input_type": "search_document"})
    );
}

#[test]
fn answers_are_read_with_their_counts_and_written_as_openai_s() {
    let texts = ["a b".to_owned(), "c".to_owned()];
    let vertex = br#"{"predictions":[{"embeddings":{"values":[0.5,1],"statistics":{"token_count":2,"truncated":false}}},{"embeddings":{"values":[0.25,0],"statistics":{"token_count":1}}}]}"#;
    let (vectors, tokens) = read(Platform::Vertex, vertex, &texts, None).unwrap();
    assert_eq!((vectors, tokens), (vec![vec![0.5, 1.0], vec![0.25, 0.0]], 3));
    let titan = br#"{"embedding":[0.5],"inputTextTokenCount":7}"#;
    assert_eq!(read(Platform::Titan, titan, &texts[..1], Some(9)).unwrap().1, 7);
    let cohere = br#"{"id":"x","embeddings":[[1],[2]],"texts":["a b","c"],"response_type":"embeddings_floats"}"#;
    assert_eq!(read(Platform::Cohere, cohere, &texts, Some(4)).unwrap().1, 4);
    let gemini = br#"{"embeddings":[{"values":[1]},{"values":[2]}]}"#;
    assert!(read(Platform::GeminiApi, gemini, &texts, None).unwrap().1 > 0, "estimated");
    let short = read(Platform::GeminiApi, br#"{"embeddings":[{"values":[1]}]}"#, &texts, None).unwrap_err();
    assert_eq!(short, "the platform answered 1 embeddings for 2 inputs");

    let floats = json(&answer("m", &[vec![0.5, -1.0]], 3, false));
    assert_eq!(
        floats,
        serde_json::json!({"object": "list", "model": "m", "usage": {"prompt_tokens": 3, "total_tokens": 3},
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}]})
    );
    let encoded = json(&answer("m", &[vec![0.5, -1.0]], 3, true));
    let bytes = STANDARD.decode(encoded["data"][0]["embedding"].as_str().unwrap()).unwrap();
    assert_eq!(bytes, [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat());
}
