use bytes::Bytes;
use futures_util::StreamExt;

use super::{BodyStream, event_stream};
use crate::adapter::bedrock::tests::encode;
use crate::api::sse::SseDecoder;
use crate::error::GatewayError;

/// What the relay reads from Bedrock's answer delivered in `chunks`: the SSE events (name, JSON
/// payload), and the error it ended with.
async fn relayed(chunks: Vec<Vec<u8>>, invoke: bool) -> (Vec<(String, serde_json::Value)>, Option<String>) {
    let body: BodyStream =
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, GatewayError>(Bytes::from(c)))).boxed();
    let mut stream = event_stream(body, 1 << 20, "bedrock/m".into(), invoke);
    let (mut decoder, mut events, mut error) = (SseDecoder::new(), Vec::new(), None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => decoder.push(&bytes),
            Err(e) => error = Some(e.to_string()),
        }
        while let Ok(Some(event)) = decoder.next_event() {
            events.push((event.event.unwrap_or_default(), serde_json::from_slice(&event.data).unwrap()));
        }
    }
    (events, error)
}

#[tokio::test]
async fn the_event_stream_split_at_every_byte_is_the_same_sse_events() {
    let bytes = encode("bedrock/stream_tools.events.json");
    let (whole, error) = relayed(vec![bytes.clone()], false).await;
    assert!(error.is_none());
    let names: Vec<&str> = whole.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"messageStart"));
    assert_eq!(names.last(), Some(&"metadata"));
    assert_eq!(whole[0].1["role"], "assistant");
    for at in 1..bytes.len() {
        let (split, error) = relayed(vec![bytes[..at].to_vec(), bytes[at..].to_vec()], false).await;
        assert!(error.is_none() && split == whole, "split at {at}");
    }
}

#[tokio::test]
async fn a_corrupt_crc_or_a_cut_message_is_an_error_not_text() {
    let mut bytes = encode("bedrock/stream_tools.events.json");
    let (whole, _) = relayed(vec![bytes.clone()], false).await;
    // The second message's last byte (its CRC): the first message still goes out.
    let first = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let second = u32::from_be_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
    bytes[first + second - 1] ^= 0xFF;
    let (events, error) = relayed(vec![bytes.clone()], false).await;
    assert_eq!(events, whole[..1].to_vec());
    assert!(error.unwrap().contains("Bedrock's event stream is corrupt"));
    let (events, error) = relayed(vec![bytes[..first + 5].to_vec()], false).await;
    assert_eq!(events.len(), 1);
    assert!(error.unwrap().contains("ended inside a message"));
}

#[tokio::test]
async fn invoke_model_chunks_are_the_messages_events_they_carry_split_anywhere() {
    let bytes = encode("bedrock/invoke_stream.events.json");
    let (whole, error) = relayed(vec![bytes.clone()], true).await;
    assert!(error.is_none());
    let names: Vec<&str> = whole.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "content_block_delta"]);
    assert_eq!(names[names.len() - 3..], ["message_delta", "message_stop", "error"]);
    assert_eq!(whole[0].1["message"]["usage"]["input_tokens"], 2);
    assert_eq!(whole[2].1["delta"], serde_json::json!({"type": "text_delta", "text": "Echo: "}));
    assert_eq!(whole.last().unwrap().1["error"]["type"], "rate_limit_error");
    for at in 1..bytes.len() {
        let (split, error) = relayed(vec![bytes[..at].to_vec(), bytes[at..].to_vec()], true).await;
        assert!(error.is_none() && split == whole, "split at {at}");
    }
}
