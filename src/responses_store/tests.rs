use serde_json::json;

use super::*;

fn store(max_stored: usize) -> ResponsesStore {
    ResponsesStore::new(&ResponsesSettings { max_stored, ..Default::default() }, None)
}

fn stored(id: &str) -> Stored {
    Stored {
        response: json!({"id": id, "object": "response", "output": [
            {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}
        ]}),
        input: vec![json!({"type": "message", "id": "msg_0", "role": "user", "content": "Hello"})],
        deployment: Some("native-a".into()),
    }
}

#[tokio::test]
async fn another_teams_response_is_not_found_and_delete_removes_it() {
    let store = store(10);
    store.put("team-a", stored("resp_1"));
    assert!(store.get("team-a", "resp_1").await.unwrap().is_some());
    assert!(store.get("team-b", "resp_1").await.unwrap().is_none(), "scoped per team");
    assert!(!store.delete("team-b", "resp_1").await.unwrap());
    assert!(store.delete("team-a", "resp_1").await.unwrap());
    assert!(store.get("team-a", "resp_1").await.unwrap().is_none());
}

#[tokio::test]
async fn memory_keeps_the_most_recently_used() {
    let store = store(2);
    store.put("t", stored("resp_1"));
    store.put("t", stored("resp_2"));
    store.get("t", "resp_1").await.unwrap().unwrap();
    store.put("t", stored("resp_3"));
    assert!(store.get("t", "resp_1").await.unwrap().is_some(), "used last");
    assert!(store.get("t", "resp_2").await.unwrap().is_none(), "the least recently used went");
    assert!(store.get("t", "resp_3").await.unwrap().is_some());
}

#[tokio::test]
async fn a_previous_response_puts_its_history_before_the_input() {
    let store = Arc::new(store(10));
    store.put("t", stored("resp_1"));
    let body = RawObject::from_slice(br#"{"model":"m","previous_response_id":"resp_1","input":"And now?"}"#).unwrap();
    let Some(Previous::Found { resolved: body, deployment }) = store.resolve_previous("t", &body).await.unwrap() else {
        panic!("stored")
    };
    assert_eq!(deployment.as_deref(), Some("native-a"), "the chain knows where it was made");
    let input: Vec<Value> = body.parse("input").unwrap().unwrap();
    let texts: Vec<String> = input.iter().map(|i| i["content"].to_string()).collect();
    assert_eq!(input.len(), 3, "{texts:?}");
    assert_eq!((input[0]["role"].as_str(), input[1]["role"].as_str()), (Some("user"), Some("assistant")));
    assert_eq!(input[2]["content"], "And now?");

    let missing = RawObject::from_slice(br#"{"previous_response_id":"resp_1"}"#).unwrap();
    let unknown = store.resolve_previous("other", &missing).await.unwrap();
    assert!(matches!(unknown, Some(Previous::Unknown(id)) if id == "resp_1"), "another team's is unknown");
}

#[tokio::test]
async fn the_keeper_stores_the_input_with_ids_unless_store_is_false() {
    let store = Arc::new(store(10));
    let team: Arc<str> = "t".into();
    let body = RawObject::from_slice(
        br#"{"input":[{"role":"user","content":"a"},{"type":"function_call_output","call_id":"c","output":"4"}]}"#,
    )
    .unwrap();
    let keep = store.keeper(&team, &body, None).unwrap();
    keep(&json!({"id": "resp_abc", "output": []}));
    let kept = store.get("t", "resp_abc").await.unwrap().unwrap();
    let ids: Vec<&str> = kept.input.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["msg_abc_in0", "fco_abc_in1"]);
    assert_eq!(kept.input[0]["content"], json!([{"type": "input_text", "text": "a"}]));
    assert!(store.keeper(&team, &RawObject::from_slice(br#"{"store":false}"#).unwrap(), None).is_none());
}

#[test]
fn a_chain_for_another_deployment_keeps_nothing_valid_only_where_it_was_made() {
    let resolved = RawObject::from_slice(
        br#"{"model":"m","previous_response_id":"resp_1","store":true,"input":[
            {"type":"message","id":"msg_0","role":"user","content":"Hi"},
            {"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"opaque"},
            {"type":"function_call","id":"fc_1","call_id":"c1","name":"f","arguments":"{}"},
            {"type":"item_reference","id":"msg_9"},
            {"role":"user","content":"And?"}]}"#,
    )
    .unwrap();
    let body = replayable(&resolved);
    assert!(!body.contains("previous_response_id"));
    assert_eq!(body.parse::<bool>("store").unwrap(), Some(true), "the rest as it was");
    let input: Vec<Value> = body.parse("input").unwrap().unwrap();
    assert_eq!(
        input,
        [
            json!({"type": "message", "role": "user", "content": "Hi"}),
            json!({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}),
            json!({"type": "item_reference", "id": "msg_9"}),
            json!({"role": "user", "content": "And?"}),
        ]
    );
}

#[test]
fn pages_input_items_in_either_order() {
    let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("i{i}")})).collect();
    let ids = |page: &Value| {
        page["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let first = page(&items, Some(2), None, None).unwrap();
    assert_eq!((ids(&first), first["has_more"].as_bool()), (vec!["i4".into(), "i3".into()], Some(true)));
    let next = page(&items, Some(2), first["last_id"].as_str(), None).unwrap();
    assert_eq!(ids(&next), ["i2", "i1"]);
    let asc = page(&items, Some(10), Some("i2"), Some("asc")).unwrap();
    assert_eq!((ids(&asc), asc["has_more"].as_bool()), (vec!["i3".into(), "i4".into()], Some(false)));
    assert!(page(&items, Some(0), None, None).is_err());
    assert!(page(&items, None, None, Some("up")).is_err());
    assert!(page(&items, None, Some("nope"), None).is_err());
}
