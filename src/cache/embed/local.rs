//! The in-process embedder: a BERT sentence encoder (e.g. all-MiniLM-L6-v2) read from a
//! directory holding `config.json`, `model.safetensors` and `tokenizer.json`; mean pooling and
//! L2 normalisation, as sentence-transformers does. Runs on its own threads fed by a bounded
//! queue: when the queue is full the caller is told at once (`Overloaded`) instead of waiting.
//! The threads end when the embedder is dropped (their queue closes).

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::{EmbedError, Embedder, normalize};

struct Job {
    text: String,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

pub struct LocalEmbedder {
    id: String,
    jobs: SyncSender<Job>,
}

/// The model and tokenizer, shared by the worker threads.
pub struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    max_tokens: usize,
    pub dims: usize,
    /// `local:<dir name>:<first 16 hex of the weights' SHA-256>`.
    pub id: String,
}

impl Model {
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Self, EmbedError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            EmbedError::Failed(format!("loading the embedding model from {}: {what}: {e}", dir.display()))
        };
        let config_text = std::fs::read_to_string(dir.join("config.json")).map_err(|e| fail("config.json", &e))?;
        let config: BertConfig = serde_json::from_str(&config_text).map_err(|e| fail("config.json", &e))?;
        let weights = std::fs::read(dir.join("model.safetensors")).map_err(|e| fail("model.safetensors", &e))?;
        let digest = Sha256::digest(&weights);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let id = format!("local:{name}:{}", digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>());
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| fail("model.safetensors", &e))?;
        let bert = BertModel::load(vb, &config).map_err(|e| fail("model.safetensors", &e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| fail("tokenizer.json", &e))?;
        // The file may carry its own truncation and padding (all-MiniLM-L6-v2's pads to 128):
        // we embed exactly the text, and refuse what is too long instead of truncating it.
        tokenizer.with_truncation(None).map_err(|e| fail("tokenizer.json", &e))?;
        tokenizer.with_padding(None);
        let limit = config.max_position_embeddings.saturating_sub(2).max(8);
        Ok(Self { bert, tokenizer, max_tokens: max_tokens.min(limit), dims: config.hidden_size, id })
    }

    /// One text → one unit vector (blocking, CPU).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let failed = |e: &dyn std::fmt::Display| EmbedError::Failed(e.to_string());
        let encoding = self.tokenizer.encode(text, true).map_err(|e| failed(&e))?;
        let ids = encoding.get_ids();
        // [CLS] and [SEP] do not count against the limit.
        if ids.len() > self.max_tokens + 2 {
            return Err(EmbedError::TooLong(self.max_tokens));
        }
        let input = Tensor::new(ids, &Device::Cpu).and_then(|t| t.unsqueeze(0)).map_err(|e| failed(&e))?;
        let token_types = input.zeros_like().map_err(|e| failed(&e))?;
        let mask = input.ones_like().map_err(|e| failed(&e))?;
        let hidden = self.bert.forward(&input, &token_types, Some(&mask)).map_err(|e| failed(&e))?;
        // No padding: the mean over every token is the attention-masked mean.
        let pooled = hidden.mean(1).and_then(|t| t.squeeze(0)).map_err(|e| failed(&e))?;
        let mut vector: Vec<f32> = pooled.to_vec1().map_err(|e| failed(&e))?;
        normalize(&mut vector);
        Ok(vector)
    }
}

impl LocalEmbedder {
    pub fn load(dir: &Path, threads: usize, queue: usize, max_tokens: usize) -> Result<Self, EmbedError> {
        let model = Arc::new(Model::load(dir, max_tokens)?);
        let id = model.id.clone();
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let model = model.clone();
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("embed-{i}"))
                .spawn(move || worker(&model, &rx))
                .map_err(|e| EmbedError::Failed(format!("starting an embedding thread: {e}")))?;
        }
        Ok(Self { id, jobs })
    }
}

fn worker(model: &Model, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // The caller may have given up (its request ended); then skip the work.
        if job.reply.is_closed() {
            continue;
        }
        let _ = job.reply.send(model.embed(&job.text));
    }
}

impl Embedder for LocalEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
        Box::pin(async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            match self.jobs.try_send(Job { text: text.to_owned(), reply }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(EmbedError::Overloaded),
                Err(TrySendError::Disconnected(_)) => return Err(EmbedError::Failed("the embedder stopped".into())),
            }
            answer.await.unwrap_or_else(|_| Err(EmbedError::Failed("the embedding thread ended".into())))
        })
    }
}
