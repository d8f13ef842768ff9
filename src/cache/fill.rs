//! Storing a miss: a clean answer — whole, or assembled from the stream frame by frame and
//! handed over at its end — goes to the exact tier (this replica's memory and Valkey) and, when
//! the request was eligible, to the semantic tier (an entry in Valkey announced on the change
//! log, or this replica's memory without Valkey). In the background, bounded in number.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::assemble::Assembler;
use super::entry::{self, Stored};
use super::key::{self, PartitionId, RequestKey};
use super::responses::Terminal;
use super::{Cache, now_ms, shared};
use crate::api::Usage;

impl Cache {
    /// Stores a clean answer (in the background, bounded).
    fn store(self: &Arc<Self>, fill: Fill, body: Bytes) {
        let (length_stops, max) = (self.settings.store_length_stops, self.settings.max_entry_bytes);
        let storable = if fill.responses {
            super::responses::check_storable(&body, length_stops, max)
        } else {
            entry::check_storable(&body, length_stops, max)
        };
        if let Err(reason) = storable {
            self.metrics.stores.get_or_create(&reason.label().into()).inc();
            return;
        }
        let Ok(permit) = self.store_slots.clone().try_acquire_owned() else {
            self.metrics.stores.get_or_create(&"busy".into()).inc();
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            cache.store_now(fill.key, fill.vector, body).await;
            drop(permit);
        });
    }

    async fn store_now(&self, key: RequestKey, vector: Option<(PartitionId, Arc<[f32]>)>, body: Bytes) {
        let now = now_ms();
        let mut stored_any = false;
        if self.settings.exact.enabled {
            let stored = Stored {
                created_ms: now,
                expires_ms: now + ms(self.settings.exact.ttl),
                question: String::new(),
                body: body.clone(),
            };
            if let Some(shared) = &self.shared
                && let Err(e) = shared.put_exact(&key.exact, &stored).await
            {
                tracing::debug!(error = %e, "cache: exact store failed");
                self.metrics.errors.get_or_create(&"put".into()).inc();
            }
            self.l1.insert(key.exact, Arc::new(stored)).await;
            stored_any = true;
        }
        if let (Some(semantic), Ok(sem)) = (&self.semantic, &key.semantic) {
            let vector = match vector {
                Some(v) => Some(v),
                // The lookup did not embed (refresh, empty partition): embed now, off the request path.
                None => match semantic.embeddings.embed(&sem.text).await {
                    Ok(v) => {
                        semantic.dims.store(v.len(), Ordering::Relaxed);
                        Some((key::partition(&sem.scope, semantic.embeddings.id(), v.len()), v))
                    }
                    Err(e) => {
                        self.metrics.embed_errors.get_or_create(&e.label().into()).inc();
                        None
                    }
                },
            };
            if let Some((partition, vector)) = vector {
                let id = entry_id(&key.exact);
                let stored = Stored {
                    created_ms: now,
                    expires_ms: now + ms(semantic.settings.ttl),
                    question: sem.text.clone(),
                    body,
                };
                let written = match (&self.shared, &semantic.local) {
                    (_, Some(local)) => {
                        local.insert(id, Arc::new(stored.clone())).await;
                        true
                    }
                    (Some(shared), None) => {
                        self.put_shared_entry(shared, semantic, &partition, id, &vector, &stored).await
                    }
                    (None, None) => false,
                };
                if written && !semantic.module.load(Ordering::Relaxed) {
                    // Our own lookups see it at once; other replicas through the change log.
                    if semantic.index.insert(partition, id, &vector, stored.expires_ms).is_err() {
                        self.metrics.index_rejects.inc();
                    }
                }
                stored_any |= written;
            }
        }
        self.metrics.stores.get_or_create(&(if stored_any { "stored" } else { "failed" }).into()).inc();
    }

    /// Writes a semantic entry to Valkey (and, with valkey-search, makes sure its index has this
    /// width); false when the write failed.
    async fn put_shared_entry(
        &self,
        shared: &shared::Shared,
        semantic: &super::Semantic,
        partition: &PartitionId,
        id: u64,
        vector: &[f32],
        stored: &Stored,
    ) -> bool {
        match shared.put_entry(partition, id, vector, stored, semantic.embeddings.id()).await {
            Ok(()) => {
                if semantic.module.load(Ordering::Relaxed)
                    && semantic.module_index_dims.load(Ordering::Relaxed) != vector.len()
                {
                    match shared::module::ensure_index(shared, vector.len()).await {
                        Ok(()) => semantic.module_index_dims.store(vector.len(), Ordering::Relaxed),
                        Err(e) => {
                            tracing::debug!(error = %e, "cache: FT.CREATE failed");
                            self.metrics.errors.get_or_create(&"index".into()).inc();
                        }
                    }
                }
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "cache: semantic store failed");
                self.metrics.errors.get_or_create(&"put".into()).inc();
                false
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A semantic entry's id: the first 8 bytes of the exact key, so storing the same request
/// twice replaces its entry instead of adding one.
pub fn entry_id(exact: &[u8; 32]) -> u64 {
    u64::from_be_bytes([exact[0], exact[1], exact[2], exact[3], exact[4], exact[5], exact[6], exact[7]])
}

/// A miss that may be stored once the upstream's answer is complete and clean.
pub struct Fill {
    pub(super) cache: Arc<Cache>,
    pub(super) key: RequestKey,
    pub(super) vector: Option<(PartitionId, Arc<[f32]>)>,
    /// A `/v1/responses` answer: a `response` object, not a chat completion.
    pub(super) responses: bool,
}

impl Fill {
    /// A whole (non-stream) answer, as sent to the client.
    pub fn whole(self, body: &[u8]) {
        let cache = self.cache.clone();
        cache.store(self, Bytes::copy_from_slice(body));
    }

    /// Starts assembling a streamed answer from its first client frame; feed the rest through
    /// the returned tap, then call `StreamFill::end`.
    pub fn stream(self, first: &[u8]) -> (StreamFill, crate::stream::FrameTap) {
        let max = self.cache.settings.max_entry_bytes;
        let mut assembler = if self.responses {
            Collect::Responses(Terminal::new(max))
        } else {
            Collect::Chat(Box::new(Assembler::new(max)))
        };
        assembler.frame(first);
        let assembler = Arc::new(Mutex::new(Some(assembler)));
        let tap_assembler = assembler.clone();
        let tap = Box::new(move |frame: &[u8]| {
            if let Ok(mut guard) = tap_assembler.lock()
                && let Some(a) = guard.as_mut()
            {
                a.frame(frame);
            }
        });
        (StreamFill { fill: self, assembler }, tap)
    }
}

/// What a streamed miss is assembled with.
enum Collect {
    Chat(Box<Assembler>),
    Responses(Terminal),
}

impl Collect {
    fn frame(&mut self, frame: &[u8]) {
        match self {
            Self::Chat(a) => a.frame(frame),
            Self::Responses(t) => t.frame(frame),
        }
    }

    fn finish(self, usage: Option<Usage>) -> Option<Vec<u8>> {
        match self {
            Self::Chat(a) => a.finish(usage),
            Self::Responses(t) => t.finish(),
        }
    }
}

/// A streamed miss being assembled.
pub struct StreamFill {
    fill: Fill,
    assembler: Arc<Mutex<Option<Collect>>>,
}

impl StreamFill {
    /// The stream ended: stored only when it completed cleanly (no error, client still there).
    pub fn end(self, clean: bool, usage: Option<Usage>) {
        let assembler = self.assembler.lock().ok().and_then(|mut a| a.take());
        let cache = self.fill.cache.clone();
        if !clean {
            cache.metrics.stores.get_or_create(&"aborted".into()).inc();
            return;
        }
        match assembler.and_then(|a| a.finish(usage)) {
            Some(body) => cache.store(self.fill, Bytes::from(body)),
            None => {
                cache.metrics.stores.get_or_create(&"incomplete".into()).inc();
            }
        }
    }
}
