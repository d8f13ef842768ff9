//! The replica's in-memory vector index, one independent partition per semantic scope. Small
//! partitions are scanned exactly (a dot product per vector); a partition that grows past a size
//! threshold also gets an HNSW graph (usearch, f16) that proposes candidates, which are then
//! re-scored exactly against the f32 vectors — so the threshold decision is always exact and
//! an approximate search can only cost a hit, never serve a wrong one. Bounded by a total
//! vector count across partitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::key::PartitionId;

/// Candidates the graph proposes for exact re-scoring.
const GRAPH_CANDIDATES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u64,
    pub similarity: f32,
    pub expires_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InsertError {
    #[error("the index holds its maximum of {0} vectors")]
    Full(usize),
    #[error("vector width {got} differs from the partition's {want}")]
    Dims { got: usize, want: usize },
}

pub struct Index {
    partitions: RwLock<HashMap<PartitionId, Arc<RwLock<Partition>>>>,
    vectors: AtomicUsize,
    max_vectors: usize,
    hnsw_min: usize,
    /// Graph builds running right now (at most one: they are CPU-heavy).
    building: Arc<AtomicUsize>,
    /// Off during a bulk load: graphs are then built once, in parallel, by `settle`.
    auto_graph: std::sync::atomic::AtomicBool,
}

struct Partition {
    dims: usize,
    ids: Vec<u64>,
    expires: Vec<u64>,
    /// Row-major, `dims` floats per id.
    vectors: Vec<f32>,
    slots: HashMap<u64, usize>,
    graph: Option<usearch::Index>,
    graph_pending: bool,
}

impl Index {
    pub fn new(max_vectors: usize, hnsw_min: usize) -> Self {
        Self {
            partitions: RwLock::new(HashMap::new()),
            vectors: AtomicUsize::new(0),
            max_vectors,
            hnsw_min,
            building: Arc::new(AtomicUsize::new(0)),
            auto_graph: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// An index for a bulk load: no graph is built until `settle`.
    pub fn for_bulk_load(max_vectors: usize, hnsw_min: usize) -> Self {
        let index = Self::new(max_vectors, hnsw_min);
        index.auto_graph.store(false, Ordering::Relaxed);
        index
    }

    pub fn len(&self) -> usize {
        self.vectors.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn has_partition(&self, p: &PartitionId) -> bool {
        self.partitions.read().unwrap_or_else(|e| e.into_inner()).contains_key(p)
    }

    fn partition(&self, p: &PartitionId) -> Option<Arc<RwLock<Partition>>> {
        self.partitions.read().unwrap_or_else(|e| e.into_inner()).get(p).cloned()
    }

    /// Adds or replaces `id` in partition `p` (idempotent: the change log may repeat itself).
    pub fn insert(&self, p: PartitionId, id: u64, vector: &[f32], expires_ms: u64) -> Result<(), InsertError> {
        let partition = match self.partition(&p) {
            Some(part) => part,
            None => {
                let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
                map.entry(p).or_insert_with(|| Arc::new(RwLock::new(Partition::new(vector.len())))).clone()
            }
        };
        let build = {
            let mut part = partition.write().unwrap_or_else(|e| e.into_inner());
            if part.dims != vector.len() {
                return Err(InsertError::Dims { got: vector.len(), want: part.dims });
            }
            if let Some(&slot) = part.slots.get(&id) {
                part.expires[slot] = expires_ms;
                let dims = part.dims;
                part.vectors[slot * dims..(slot + 1) * dims].copy_from_slice(vector);
                if let Some(graph) = &part.graph {
                    let _ = graph.remove(id);
                    let _ = add_to_graph(graph, id, vector);
                }
                return Ok(());
            }
            if self.vectors.fetch_add(1, Ordering::Relaxed) >= self.max_vectors {
                self.vectors.fetch_sub(1, Ordering::Relaxed);
                return Err(InsertError::Full(self.max_vectors));
            }
            part.push(id, vector, expires_ms);
            if let Some(graph) = &part.graph {
                let _ = add_to_graph(graph, id, vector);
            }
            self.auto_graph.load(Ordering::Relaxed)
                && part.graph.is_none()
                && !part.graph_pending
                && part.ids.len() >= self.hnsw_min
        };
        if build && self.building.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            partition.write().unwrap_or_else(|e| e.into_inner()).graph_pending = true;
            let building = self.building.clone();
            let spawned = std::thread::Builder::new().name("cache-hnsw".into()).spawn({
                let partition = partition.clone();
                let building = building.clone();
                move || {
                    build_graph(&partition);
                    building.store(0, Ordering::Release);
                }
            });
            if spawned.is_err() {
                building.store(0, Ordering::Release);
                partition.write().unwrap_or_else(|e| e.into_inner()).graph_pending = false;
            }
        }
        Ok(())
    }

    pub fn remove(&self, p: &PartitionId, id: u64) {
        let Some(partition) = self.partition(p) else { return };
        let mut part = partition.write().unwrap_or_else(|e| e.into_inner());
        if part.remove(id) {
            self.vectors.fetch_sub(1, Ordering::Relaxed);
        }
        if part.ids.is_empty() && !part.graph_pending {
            drop(part);
            let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            if map.get(p).is_some_and(|x| x.read().map(|x| x.ids.is_empty()).unwrap_or(false)) {
                map.remove(p);
            }
        }
    }

    /// Live candidates with similarity at least `min_similarity`, best first, at most `limit`;
    /// plus the best similarity seen at all (for the similarity histogram).
    pub fn search(
        &self,
        p: &PartitionId,
        query: &[f32],
        now_ms: u64,
        min_similarity: f32,
        limit: usize,
    ) -> (Vec<Candidate>, Option<f32>) {
        let Some(partition) = self.partition(p) else { return (Vec::new(), None) };
        let part = partition.read().unwrap_or_else(|e| e.into_inner());
        if part.dims != query.len() {
            return (Vec::new(), None);
        }
        let mut found: Vec<Candidate> = Vec::new();
        let mut best: Option<f32> = None;
        let mut consider = |slot: usize| {
            if part.expires[slot] <= now_ms {
                return;
            }
            let similarity = dot(query, part.vector(slot));
            best = Some(best.map_or(similarity, |b: f32| b.max(similarity)));
            if similarity >= min_similarity {
                found.push(Candidate { id: part.ids[slot], similarity, expires_ms: part.expires[slot] });
            }
        };
        let searched_graph = match &part.graph {
            Some(graph) => match graph.search(query, GRAPH_CANDIDATES) {
                Ok(matches) => {
                    for key in matches.keys {
                        if let Some(&slot) = part.slots.get(&key) {
                            consider(slot);
                        }
                    }
                    true
                }
                Err(_) => false,
            },
            None => false,
        };
        if !searched_graph {
            for slot in 0..part.ids.len() {
                consider(slot);
            }
        }
        found.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        found.truncate(limit);
        (found, best)
    }

    /// Drops expired vectors; returns how many.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let partitions: Vec<(PartitionId, Arc<RwLock<Partition>>)> =
            self.partitions.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut removed = 0;
        for (p, partition) in partitions {
            let expired: Vec<u64> = {
                let part = partition.read().unwrap_or_else(|e| e.into_inner());
                part.ids.iter().zip(&part.expires).filter(|(_, e)| **e <= now_ms).map(|(id, _)| *id).collect()
            };
            for id in &expired {
                self.remove(&p, *id);
            }
            removed += expired.len();
        }
        removed
    }

    /// Builds every graph that is due, now, on this thread (after a bulk load; benchmarks and
    /// tests), then builds them automatically again.
    pub fn settle(&self) {
        let partitions: Vec<Arc<RwLock<Partition>>> =
            self.partitions.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for partition in partitions {
            while self.building.load(Ordering::Acquire) != 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let due = {
                let part = partition.read().unwrap_or_else(|e| e.into_inner());
                part.graph.is_none() && part.ids.len() >= self.hnsw_min
            };
            if due {
                partition.write().unwrap_or_else(|e| e.into_inner()).graph_pending = true;
                build_graph(&partition);
            }
        }
        self.auto_graph.store(true, Ordering::Relaxed);
    }

    /// Approximate bytes held (vectors, ids, expiries, slot map, graphs).
    pub fn memory_bytes(&self) -> usize {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .map(|p| {
                let part = p.read().unwrap_or_else(|e| e.into_inner());
                part.vectors.capacity() * 4
                    + part.ids.capacity() * 8
                    + part.expires.capacity() * 8
                    + part.slots.capacity() * 24
                    + part.graph.as_ref().map_or(0, |g| g.memory_usage())
            })
            .sum()
    }

    /// Swaps in a freshly loaded index (after a full rescan of Valkey).
    pub fn replace_with(&self, other: Index) {
        let fresh = other.partitions.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        *map = fresh;
        self.vectors.store(other.vectors.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Partition {
    fn new(dims: usize) -> Self {
        Self {
            dims,
            ids: Vec::new(),
            expires: Vec::new(),
            vectors: Vec::new(),
            slots: HashMap::new(),
            graph: None,
            graph_pending: false,
        }
    }

    fn vector(&self, slot: usize) -> &[f32] {
        &self.vectors[slot * self.dims..(slot + 1) * self.dims]
    }

    fn push(&mut self, id: u64, vector: &[f32], expires_ms: u64) {
        self.slots.insert(id, self.ids.len());
        self.ids.push(id);
        self.expires.push(expires_ms);
        self.vectors.extend_from_slice(vector);
    }

    fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.slots.remove(&id) else { return false };
        let last = self.ids.len() - 1;
        if slot != last {
            let moved = self.ids[last];
            self.ids.swap(slot, last);
            self.expires.swap(slot, last);
            let dims = self.dims;
            let (head, tail) = self.vectors.split_at_mut(last * dims);
            head[slot * dims..(slot + 1) * dims].copy_from_slice(&tail[..dims]);
            self.slots.insert(moved, slot);
        }
        self.ids.pop();
        self.expires.pop();
        self.vectors.truncate(last * self.dims);
        if let Some(graph) = &self.graph {
            let _ = graph.remove(id);
        }
        true
    }
}

fn new_graph(dims: usize, capacity: usize, threads: usize) -> Option<usearch::Index> {
    let options = usearch::IndexOptions {
        dimensions: dims,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F16,
        connectivity: 16,
        expansion_add: 64,
        expansion_search: 64,
        multi: false,
    };
    let graph = usearch::Index::new(&options).ok()?;
    graph.reserve_capacity_and_threads(capacity, threads).ok()?;
    Some(graph)
}

fn add_to_graph(graph: &usearch::Index, id: u64, vector: &[f32]) -> bool {
    if graph.size() + 1 >= graph.capacity() && graph.reserve((graph.capacity() * 2).max(1024)).is_err() {
        return false;
    }
    graph.add(id, vector).is_ok()
}

/// Builds a partition's graph outside its lock from a snapshot, then installs it after adding
/// whatever changed meanwhile.
fn build_graph(partition: &RwLock<Partition>) {
    let (dims, ids, vectors) = {
        let part = partition.read().unwrap_or_else(|e| e.into_inner());
        (part.dims, part.ids.clone(), part.vectors.clone())
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let graph = new_graph(dims, ids.len() * 2, threads).and_then(|graph| {
        // usearch adds concurrently (one context per reserved thread).
        let stripe = ids.len().div_ceil(threads).max(1);
        let all_added = std::thread::scope(|scope| {
            let workers: Vec<_> = ids
                .chunks(stripe)
                .enumerate()
                .map(|(n, chunk)| {
                    let (graph, vectors) = (&graph, &vectors);
                    scope.spawn(move || {
                        chunk.iter().enumerate().all(|(i, id)| {
                            let at = n * stripe + i;
                            graph.add(*id, &vectors[at * dims..(at + 1) * dims]).is_ok()
                        })
                    })
                })
                .collect();
            workers.into_iter().all(|w| w.join().unwrap_or(false))
        });
        all_added.then_some(graph)
    });
    let mut part = partition.write().unwrap_or_else(|e| e.into_inner());
    part.graph_pending = false;
    let Some(graph) = graph else { return };
    let built: std::collections::HashSet<u64> = ids.into_iter().collect();
    for id in &built {
        if !part.slots.contains_key(id) {
            let _ = graph.remove(*id);
        }
    }
    for slot in 0..part.ids.len() {
        let id = part.ids[slot];
        if !built.contains(&id) {
            let _ = add_to_graph(&graph, id, part.vector(slot));
        }
    }
    part.graph = Some(graph);
}

/// Dot product with eight independent accumulators, which the compiler turns into SIMD.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut v: Vec<f32> = (0..dims).map(|_| rng.f32() - 0.5).collect();
        crate::cache::embed::normalize(&mut v);
        v
    }

    #[test]
    fn exact_scan_finds_and_forgets() {
        let index = Index::new(100, 1000);
        let p = [1u8; 16];
        for i in 0..50 {
            index.insert(p, i, &unit(i, 32), 1_000).unwrap();
        }
        let (found, best) = index.search(&p, &unit(7, 32), 10, 0.999, 3);
        assert_eq!(found[0].id, 7);
        assert!(best.unwrap() > 0.999);
        assert!(index.search(&[2u8; 16], &unit(7, 32), 10, 0.5, 3).0.is_empty(), "other partitions are invisible");
        assert!(index.search(&p, &unit(7, 32), 1_000, 0.5, 3).0.is_empty(), "expired entries are never candidates");
        index.remove(&p, 7);
        assert!(index.search(&p, &unit(7, 32), 10, 0.999, 3).0.is_empty());
        assert_eq!(index.len(), 49);
        assert_eq!(index.sweep(2_000), 49);
        assert_eq!(index.partition_count(), 0);
        assert_eq!(index.insert(p, 1, &unit(1, 16), 5), Ok(()));
        assert_eq!(index.insert(p, 2, &unit(1, 32), 5), Err(InsertError::Dims { got: 32, want: 16 }));
    }

    #[test]
    fn bounded_and_idempotent() {
        let index = Index::new(3, 1000);
        for i in 0..3 {
            index.insert([0; 16], i, &unit(i, 8), 10).unwrap();
        }
        index.insert([0; 16], 1, &unit(1, 8), 20).unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(index.insert([0; 16], 9, &unit(9, 8), 10), Err(InsertError::Full(3)));
    }

    #[test]
    fn graph_partitions_re_score_exactly() {
        let index = Index::new(10_000, 256);
        let p = [3u8; 16];
        for i in 0..600 {
            index.insert(p, i, &unit(i, 64), u64::MAX).unwrap();
        }
        index.settle();
        for probe in [0u64, 123, 599] {
            let (found, _) = index.search(&p, &unit(probe, 64), 0, 0.99, 1);
            assert_eq!(found.first().map(|c| c.id), Some(probe));
            assert!((found[0].similarity - 1.0).abs() < 1e-5, "the similarity is exact, not f16");
        }
        index.remove(&p, 123);
        assert!(index.search(&p, &unit(123, 64), 0, 0.99, 1).0.is_empty());
    }
}
