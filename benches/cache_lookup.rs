//! Semantic lookup latency without the embedding: the in-process index search (plus the exact
//! key's hashing and an L1-sized map probe) at the two shapes the issue names — 100,000 entries
//! in one partition (HNSW graph + exact re-scoring) and 1,000 partitions × 100 entries (exact
//! scan) — and the memory each cached vector costs. Synthetic clustered unit vectors of 384
//! dimensions (MiniLM's width). Run: `cargo bench --bench cache_lookup`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: a failure stops it at once, and it reports on stdout"
)]

use std::time::Instant;

use llm_gateway::cache::embed::normalize;
use llm_gateway::cache::index::Index;
use llm_gateway::cache::key::{self, PartitionId, SemanticRules};

const DIMS: usize = 384;
const QUERIES: usize = 2_000;

fn clustered(rng: &mut fastrand::Rng, centres: &[Vec<f32>], noise: f32) -> Vec<f32> {
    let centre = &centres[rng.usize(..centres.len())];
    let mut v: Vec<f32> = centre.iter().map(|c| c + noise * (rng.f32() - 0.5)).collect();
    normalize(&mut v);
    v
}

fn near(rng: &mut fastrand::Rng, v: &[f32]) -> Vec<f32> {
    // About 0.97 to the original: a close paraphrase.
    let mut q: Vec<f32> = v.iter().map(|x| x + 0.044 * (rng.f32() - 0.5)).collect();
    normalize(&mut q);
    q
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut micros: Vec<f64>) {
    micros.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<44} p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>7.1} µs",
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        micros[micros.len() - 1]
    );
}

/// `spread`: per-dimension noise around 1,000 cluster centres. 0.13 gives members of a cluster a
/// cosine of about 0.8 to their centre and 0.65 to each other, unrelated vectors about 0 — the
/// shape of sentence embeddings of one topic; 2.0 is nearly uniform noise, HNSW's worst case.
fn shape(name: &str, partitions: usize, per_partition: usize, hnsw_min: usize, spread: f32) {
    let mut rng = fastrand::Rng::with_seed(7);
    let centres: Vec<Vec<f32>> = (0..1_000)
        .map(|_| {
            let mut c: Vec<f32> = (0..DIMS).map(|_| rng.f32() - 0.5).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let index = Index::for_bulk_load(partitions * per_partition + 1, hnsw_min);
    let ids: Vec<PartitionId> =
        (0..partitions).map(|p| key::partition(&[p as u8; 32], &format!("bench{p}"), DIMS)).collect();
    let mut stored: Vec<(PartitionId, Vec<f32>)> = Vec::new();
    let started = Instant::now();
    let mut id = 0u64;
    for p in &ids {
        for _ in 0..per_partition {
            let v = clustered(&mut rng, &centres, spread);
            index.insert(*p, id, &v, u64::MAX).expect("insert");
            if rng.usize(..per_partition.max(1)) < 4 {
                stored.push((*p, v));
            }
            id += 1;
        }
    }
    index.settle();
    let load = started.elapsed();
    let n = partitions * per_partition;
    println!(
        "\n{name}: {n} vectors, loaded in {:.1} s; memory {:.0} bytes per vector ({} f32 + ids, expiry, slot map{})",
        load.as_secs_f64(),
        index.memory_bytes() as f64 / n as f64,
        DIMS * 4,
        if per_partition >= hnsw_min { ", HNSW f16 graph" } else { "" }
    );

    let rules = SemanticRules { max_temperature: 1.0, max_messages: 4, max_chars: 2000 };
    let body = llm_gateway::api::RawObject::from_slice(
        br#"{"model":"gpt","temperature":0.2,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How do I reset my password?"}]}"#,
    )
    .unwrap();
    let mut keying = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let t = Instant::now();
        let k = key::request_key("team-a", "gpt", &body, Some(rules)).unwrap();
        std::hint::black_box(k);
        keying.push(t.elapsed().as_secs_f64() * 1e6);
    }
    report("request keys (exact + partition hashes)", keying);

    let (mut hits, mut misses, mut found) = (Vec::new(), Vec::new(), 0);
    for i in 0..QUERIES {
        let (p, v) = &stored[rng.usize(..stored.len())];
        let q = near(&mut rng, v);
        let t = Instant::now();
        let (candidates, _) = index.search(p, &q, 0, 0.95, 3);
        hits.push(t.elapsed().as_secs_f64() * 1e6);
        found += usize::from(!candidates.is_empty());
        let random = clustered(&mut rng, &centres, 2.0);
        let t = Instant::now();
        std::hint::black_box(index.search(&ids[i % ids.len()], &random, 0, 0.95, 3));
        misses.push(t.elapsed().as_secs_f64() * 1e6);
    }
    report("index search, near-duplicate query (hit)", hits);
    report("index search, unrelated query (miss)", misses);
    println!("near-duplicate queries that found their entry: {found}/{QUERIES}");
}

/// The embedding itself (what the lookup figures exclude), when a model directory is given in
/// `LLM_GATEWAY_TEST_MODEL_DIR`.
fn embedding() {
    let Ok(dir) = std::env::var("LLM_GATEWAY_TEST_MODEL_DIR") else {
        println!("(set LLM_GATEWAY_TEST_MODEL_DIR to also time the local embedding model)");
        return;
    };
    let model = llm_gateway::cache::embed::local::Model::load(std::path::Path::new(&dir), 256).expect("model");
    let long = "Please explain, step by step, how the monthly invoice is computed for a team that changed plans twice during the billing period and also bought extra seats, including proration, taxes, credits from the previous plan, and what happens when a payment fails and is retried later in the month. ".repeat(2);
    for (name, text, runs) in
        [("short question (9 tokens)", "How do I reset my password?", 100), ("about 120 tokens", long.as_str(), 30)]
    {
        let _ = model.embed(text);
        let mut micros = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(model.embed(text).expect("embeds"));
            micros.push(t.elapsed().as_secs_f64() * 1e6);
        }
        report(&format!("embedding, {name}"), micros);
    }
}

fn main() {
    println!("cache lookup benchmark ({DIMS}-d vectors, {QUERIES} queries per case, one thread)");
    embedding();
    shape("1 partition x 100,000 clustered entries", 1, 100_000, 4096, 0.13);
    shape("1,000 partitions x 100 clustered entries", 1_000, 100, 4096, 0.13);
    shape("1 partition x 100,000 near-uniform entries (worst case)", 1, 100_000, 4096, 2.0);
}
