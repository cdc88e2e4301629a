//! [`Tokenizer`]: the Hugging Face `tokenizers` crate plus the special-token facts of a model
//! folder (`tokenizer_config.json`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::error::{ModelError, Result};

/// GPT-2's end-of-text token.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// A tokenizer with its special tokens by role.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    inner: HfTokenizer,
    bos: Option<String>,
    eos: Option<String>,
    pad: Option<String>,
    unk: Option<String>,
    chat_template: Option<String>,
    /// Keys of `tokenizer_config.json` manners does not manage, written back unchanged
    /// (`tokenizer_class`, `add_bos_token`, ...).
    extra_config: Map<String, Value>,
}

impl Tokenizer {
    /// Wraps a Hugging Face tokenizer. GPT-2 conventions apply when it has `<|endoftext|>`:
    /// that token is EOS (and BOS for generation configs), with no BOS inserted in texts.
    pub fn from_hf(inner: HfTokenizer) -> Self {
        let eos = inner.token_to_id(ENDOFTEXT).map(|_| ENDOFTEXT.to_string());
        Tokenizer {
            inner,
            bos: None,
            eos,
            pad: None,
            unk: None,
            chat_template: None,
            extra_config: Map::new(),
        }
    }

    /// GPT-2 byte-level BPE from `vocab.json` and `merges.txt`.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        for p in [vocab, merges] {
            if !p.is_file() {
                return Err(ModelError::MissingFile {
                    path: p.to_path_buf(),
                    hint: String::new(),
                });
            }
        }
        let err = |e: tokenizers::Error| ModelError::Tokenizer {
            path: vocab.to_path_buf(),
            message: e.to_string(),
        };
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .build()
            .map_err(err)?;
        let mut inner = HfTokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_decoder(Some(ByteLevelDecoder::default()))
            .with_post_processor(Some(ByteLevelProcessor::default().trim_offsets(false)));
        if inner.token_to_id(ENDOFTEXT).is_some() {
            inner.add_special_tokens(&[AddedToken::from(ENDOFTEXT, true)]);
        }
        Ok(Self::from_hf(inner))
    }

    /// Trains a GPT-2 style byte-level BPE on `texts` (the `tokenizers` crate's trainer):
    /// `vocab_size` tokens in all, the `special` tokens reserved first (ids 0, 1, ...), every byte
    /// in the initial alphabet so any text encodes. `<|endoftext|>`, when among `special`, is EOS.
    pub fn train_byte_level_bpe(
        texts: &[String],
        vocab_size: usize,
        special: &[&str],
        min_frequency: u64,
    ) -> Result<Self> {
        use tokenizers::models::TrainerWrapper;
        use tokenizers::models::bpe::BpeTrainer;
        let err = |e: tokenizers::Error| ModelError::Tokenizer {
            path: PathBuf::from("<training>"),
            message: e.to_string(),
        };
        let specials: Vec<AddedToken> = special
            .iter()
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut inner = HfTokenizer::new(BPE::default());
        inner
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_decoder(Some(ByteLevelDecoder::default()))
            .with_post_processor(Some(ByteLevelProcessor::default().trim_offsets(false)));
        inner.train(&mut trainer, texts.iter()).map_err(err)?;
        inner.add_special_tokens(&specials);
        Ok(Self::from_hf(inner))
    }

    /// A `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                hint: String::new(),
            });
        }
        let inner = HfTokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self::from_hf(inner))
    }

    /// The tokenizer of a model folder: `tokenizer.json`, or `vocab.json` + `merges.txt`; then
    /// `tokenizer_config.json` (special tokens, chat template) when present; then
    /// `chat_template.jinja` (where transformers 5 saves the template), which wins over the
    /// config's `chat_template`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let mut tok = if json.is_file() {
            Self::from_file(&json)?
        } else if dir.join("vocab.json").is_file() {
            Self::from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt"))?
        } else {
            return Err(ModelError::MissingFile {
                path: json,
                hint: " (nor vocab.json + merges.txt)".into(),
            });
        };
        if tok.inner.get_vocab_size(false) == 0 {
            return Err(ModelError::Tokenizer {
                path: dir.join("tokenizer.json"),
                message: "the vocabulary is empty".into(),
            });
        }
        let cfg = dir.join("tokenizer_config.json");
        if cfg.is_file() {
            tok.apply_config_file(&cfg)?;
        }
        let jinja = dir.join(CHAT_TEMPLATE_FILE);
        if jinja.is_file() {
            let t = std::fs::read_to_string(&jinja).map_err(|e| ModelError::io(&jinja, e))?;
            tok.chat_template = Some(t);
        }
        Ok(tok)
    }

    fn apply_config_file(&mut self, path: &Path) -> Result<()> {
        let v = crate::io::read_json(path)?;
        let Value::Object(map) = v else {
            return Err(ModelError::Json {
                path: path.to_path_buf(),
                field: "<config>".into(),
                message: "the document must be a JSON object".into(),
            });
        };
        // Added tokens declared only in the config (older folders without tokenizer.json).
        if let Some(Value::Object(dec)) = map.get("added_tokens_decoder") {
            let mut missing = Vec::new();
            for t in dec.values() {
                if let Some(content) = t.get("content").and_then(Value::as_str)
                    && self.inner.token_to_id(content).is_none()
                {
                    let special = t.get("special").and_then(Value::as_bool).unwrap_or(true);
                    missing.push(AddedToken::from(content.to_string(), special));
                }
            }
            if !missing.is_empty() {
                self.inner.add_special_tokens(&missing);
            }
        }
        let token = |field: &str| -> Result<Option<String>> {
            match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(ModelError::Json {
                        path: path.to_path_buf(),
                        field: format!("{field}.content"),
                        message: "expected a string".into(),
                    }),
                },
                Some(other) => Err(ModelError::Json {
                    path: path.to_path_buf(),
                    field: field.into(),
                    message: format!("expected a string or an AddedToken object, got {other}"),
                }),
            }
        };
        let bos = token("bos_token")?;
        let eos = token("eos_token")?;
        self.pad = token("pad_token")?;
        self.unk = token("unk_token")?;
        if eos.is_some() {
            self.eos = eos;
        }
        // GPT-2 folders name <|endoftext|> as bos_token too, but never insert it: keep BOS only
        // when it differs from EOS (llama-style tokenizers).
        self.bos = bos.filter(|b| Some(b) != self.eos.as_ref());
        self.chat_template = match map.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default", else the first.
            Some(Value::Array(list)) => {
                let named = |n: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(Value::as_str) == Some(n))
                };
                named("default")
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }
            Some(other) => {
                return Err(ModelError::Json {
                    path: path.to_path_buf(),
                    field: "chat_template".into(),
                    message: format!("expected a string or a list, got {other}"),
                });
            }
        };
        for (k, v) in map {
            if !KNOWN_CONFIG_KEYS.contains(&k.as_str()) {
                self.extra_config.insert(k, v);
            }
        }
        for (field, name) in [("bos_token", &self.bos), ("eos_token", &self.eos)] {
            if let Some(n) = name
                && self.inner.token_to_id(n).is_none()
            {
                return Err(ModelError::Json {
                    path: path.to_path_buf(),
                    field: field.into(),
                    message: format!("token `{n}` is not in the vocabulary"),
                });
            }
        }
        Ok(())
    }

    /// The Hugging Face tokenizer underneath (what `manners-data` templates take).
    pub fn hf(&self) -> &HfTokenizer {
        &self.inner
    }

    /// Token ids of `text`. Special tokens written in the text (e.g. `<|endoftext|>`) are
    /// recognised; nothing is inserted (no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; `skip_special` drops special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.inner.decode(ids, skip_special).unwrap_or_else(|_| {
            // Decoding only fails on ids outside the vocabulary: show them.
            ids.iter()
                .map(|&i| {
                    self.inner
                        .id_to_token(i)
                        .unwrap_or_else(|| format!("<unk:{i}>"))
                })
                .collect()
        })
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Tokens in the vocabulary, added tokens included. Ids run from 0 to this minus one.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_deref()
    }

    pub fn pad_token(&self) -> Option<&str> {
        self.pad.as_deref()
    }

    /// The unknown token: `unk_token` of `tokenizer_config.json`, else EOS (as it is written
    /// back there).
    pub fn unk_token(&self) -> Option<&str> {
        self.unk.as_deref().or(self.eos.as_deref())
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_deref().and_then(|t| self.token_id(t))
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_deref().and_then(|t| self.token_id(t))
    }

    pub fn set_bos_token(&mut self, token: Option<&str>) {
        self.bos = token.map(str::to_string);
    }

    pub fn set_eos_token(&mut self, token: Option<&str>) {
        self.eos = token.map(str::to_string);
    }

    /// The Jinja chat template from `tokenizer_config.json`, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Special (added) tokens with their ids, by id.
    pub fn special_tokens(&self) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        v.sort();
        v
    }

    /// Adds the special tokens that are missing; returns their new ids (empty if all exist).
    /// The model's embedding must then grow to [`Tokenizer::vocab_size`] rows
    /// (see [`crate::Model::resize_token_embeddings`]).
    pub fn add_special_tokens(&mut self, tokens: &[&str]) -> Vec<u32> {
        let missing: Vec<AddedToken> = tokens
            .iter()
            .filter(|t| self.inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        if missing.is_empty() {
            return Vec::new();
        }
        self.inner.add_special_tokens(&missing);
        missing
            .iter()
            .filter_map(|t| self.inner.token_to_id(&t.content))
            .collect()
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`, and the chat template
    /// (when there is one) both as the config's `chat_template` (transformers 4) and as
    /// `chat_template.jinja` (transformers 5). Keys of the original config that manners does not
    /// manage are kept; a tokenizer without one gets GPT-2's (`GPT2Tokenizer`, no BOS added).
    pub fn save_dir(&self, dir: &Path, model_max_length: usize) -> Result<()> {
        let json_path = dir.join("tokenizer.json");
        let text = self
            .inner
            .to_string(true)
            .map_err(|e| ModelError::Tokenizer {
                path: json_path.clone(),
                message: e.to_string(),
            })?;
        crate::io::write_atomic(&json_path, text.as_bytes())?;
        let mut cfg = self.extra_config.clone();
        let mut decoder = Map::new();
        for (id, t) in self.inner.get_added_tokens_decoder() {
            decoder.insert(
                id.to_string(),
                json!({
                    "content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                    "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special,
                }),
            );
        }
        cfg.insert("added_tokens_decoder".into(), Value::Object(decoder));
        for (k, v) in [
            ("add_bos_token", json!(false)),
            ("add_prefix_space", json!(false)),
            ("clean_up_tokenization_spaces", json!(false)),
            ("tokenizer_class", json!("GPT2Tokenizer")),
        ] {
            cfg.entry(k).or_insert(v);
        }
        // GPT-2 folders name <|endoftext|> as BOS and EOS; keep that convention.
        let bos = self.bos.clone().or_else(|| self.eos.clone());
        cfg.insert("bos_token".into(), json!(bos));
        cfg.insert("eos_token".into(), json!(self.eos));
        cfg.insert("pad_token".into(), json!(self.pad));
        cfg.insert(
            "unk_token".into(),
            json!(self.unk.clone().or_else(|| self.eos.clone())),
        );
        if let Some(t) = &self.chat_template {
            cfg.insert("chat_template".into(), json!(t));
            crate::io::write_atomic(&dir.join(CHAT_TEMPLATE_FILE), t.as_bytes())?;
        }
        cfg.insert("model_max_length".into(), json!(model_max_length));
        let text = serde_json::to_string_pretty(&Value::Object(cfg)).expect("json value");
        crate::io::write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
    }
}

/// Keys of `tokenizer_config.json` manners reads and writes itself.
const KNOWN_CONFIG_KEYS: &[&str] = &[
    "added_tokens_decoder",
    "bos_token",
    "eos_token",
    "pad_token",
    "unk_token",
    "chat_template",
    "model_max_length",
];

/// Where transformers 5 saves a tokenizer's chat template.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
