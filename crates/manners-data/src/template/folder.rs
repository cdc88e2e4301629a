//! The chat template of a model folder, for training and inference alike: the template the
//! model was trained with (`manners_template.json`, written beside its tokenizer), else the
//! tokenizer's own Jinja `chat_template`, else `chatml`.

use std::path::Path;

use super::{ChatTemplate, SpecialTokens, TemplateSpec};
use crate::error::{DataError, Result};

/// The file beside a model's tokenizer that records the chat template it was trained with.
pub const TEMPLATE_FILE: &str = "manners_template.json";

impl SpecialTokens {
    /// Special tokens by role (what a tokenizer's `tokenizer_config.json` names).
    pub fn from_roles(bos: Option<&str>, eos: Option<&str>, pad: Option<&str>) -> Self {
        SpecialTokens {
            bos: bos.map(str::to_string),
            eos: eos.map(str::to_string),
            pad: pad.map(str::to_string),
            additional: Vec::new(),
        }
    }
}

impl ChatTemplate {
    /// The contents of [`TEMPLATE_FILE`] for this template.
    pub fn spec_file(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.spec()).expect("a template spec serialises")
    }
}

/// The template a model folder was trained with ([`TEMPLATE_FILE`]), else `tokenizer_template`
/// (the folder's Jinja `chat_template`) with `specials`; `None` when it has neither.
pub fn saved_template(
    dir: &Path,
    tokenizer_template: Option<&str>,
    specials: &SpecialTokens,
) -> Result<Option<ChatTemplate>> {
    let p = dir.join(TEMPLATE_FILE);
    if p.is_file() {
        let text = std::fs::read_to_string(&p).map_err(|e| DataError::io(&p, e))?;
        let spec: TemplateSpec = serde_json::from_str(&text).map_err(|e| DataError::Json {
            path: p.clone(),
            message: e.to_string(),
        })?;
        return Ok(Some(ChatTemplate::from_spec(&spec)?));
    }
    match tokenizer_template {
        Some(src) => Ok(Some(ChatTemplate::from_jinja(src, specials)?)),
        None => Ok(None),
    }
}

/// Picks the template: `arg` (a `--template` value, see [`ChatTemplate::resolve`]), else the
/// model folder's saved one ([`saved_template`]), else `chatml`.
pub fn choose_template(
    arg: Option<&str>,
    model_dir: Option<&Path>,
    tokenizer_template: Option<&str>,
    specials: &SpecialTokens,
) -> Result<ChatTemplate> {
    if let Some(a) = arg {
        return ChatTemplate::resolve(a, specials);
    }
    if let Some(dir) = model_dir
        && let Some(t) = saved_template(dir, tokenizer_template, specials)?
    {
        return Ok(t);
    }
    ChatTemplate::builtin("chatml", specials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_template_wins_over_the_tokenizer_s_and_chatml_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let sp = SpecialTokens::from_roles(Some("<s>"), Some("</s>"), None);
        let jinja = "{% for m in messages %}{{ m.content }}{% endfor %}";
        assert_eq!(
            choose_template(None, None, Some(jinja), &sp)
                .unwrap()
                .name(),
            "chatml"
        );
        let from_tok = choose_template(None, Some(dir.path()), Some(jinja), &sp).unwrap();
        assert_eq!(from_tok.name(), "jinja");
        let plain = ChatTemplate::builtin("plain", &sp).unwrap();
        std::fs::write(dir.path().join(TEMPLATE_FILE), plain.spec_file()).unwrap();
        let saved = choose_template(None, Some(dir.path()), Some(jinja), &sp).unwrap();
        assert_eq!(saved.name(), "plain");
        let arg = choose_template(Some("llama2"), Some(dir.path()), None, &sp).unwrap();
        assert_eq!(arg.name(), "llama2");
        std::fs::write(dir.path().join(TEMPLATE_FILE), "{").unwrap();
        let e = saved_template(dir.path(), None, &sp)
            .unwrap_err()
            .to_string();
        assert!(e.contains(TEMPLATE_FILE), "{e}");
    }
}
