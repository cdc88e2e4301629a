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

    /// The Jinja template for inference engines (llama.cpp, plain Jinja2): [`to_jinja`]
    /// without Hugging Face's `{% generation %}` training markers, which they do not know.
    ///
    /// [`to_jinja`]: ChatTemplate::to_jinja
    pub fn to_inference_jinja(&self) -> String {
        strip_generation_tags(&self.to_jinja())
    }

    /// The template in Ollama's Go template syntax, for a `Modelfile` (`None` for Jinja
    /// templates, which Ollama reads from the GGUF itself when it recognises them).
    pub fn to_ollama(&self) -> Option<String> {
        let bos = self.specials().bos.clone().unwrap_or_default();
        let eos = self.specials().eos.clone().unwrap_or_default();
        match self.name() {
            "chatml" => Some(format!(
                "{bos}{{{{- range .Messages }}}}<|im_start|>{{{{ .Role }}}}\n{{{{ .Content }}}}<|im_end|>\n{{{{ end }}}}<|im_start|>assistant\n"
            )),
            "plain" => Some(format!(
                "{bos}{{{{- range .Messages }}}}{{{{ if eq .Role \"system\" }}}}System: {{{{ .Content }}}}\n{{{{ else if eq .Role \"user\" }}}}User: {{{{ .Content }}}}\n{{{{ else }}}}Assistant: {{{{ .Content }}}}{eos}\n{{{{ end }}}}{{{{ end }}}}Assistant:"
            )),
            "llama2" => Some(format!(
                "{{{{- $system := \"\" }}}}{{{{- range .Messages }}}}{{{{- if eq .Role \"system\" }}}}{{{{ $system = .Content }}}}{{{{- else if eq .Role \"user\" }}}}{bos}[INST] {{{{ if $system }}}}<<SYS>>\n{{{{ $system }}}}\n<</SYS>>\n\n{{{{ $system = \"\" }}}}{{{{ end }}}}{{{{ .Content }}}} [/INST]{{{{- else }}}} {{{{ .Content }}}} {eos}{{{{- end }}}}{{{{- end }}}}"
            )),
            _ => None,
        }
    }
}

/// Removes `{% generation %}` / `{% endgeneration %}` (any whitespace control) from a Jinja
/// template, keeping what they enclose.
pub fn strip_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start + 2..start + len];
        let word = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        if word != "generation" && word != "endgeneration" {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
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
    fn inference_templates_drop_the_training_markers_and_render_the_same() {
        let sp = SpecialTokens::from_roles(None, Some("<|endoftext|>"), None);
        let t = ChatTemplate::builtin("chatml", &sp).unwrap();
        let plain = t.to_inference_jinja();
        assert!(
            !plain.contains("{% generation") && !plain.contains("endgeneration"),
            "{plain}"
        );
        assert!(t.to_jinja().contains("{% generation %}"));
        let msgs = [
            crate::Message::user("Hi"),
            crate::Message::assistant("Hello!"),
        ];
        let again = ChatTemplate::from_jinja(&plain, &sp).unwrap();
        assert_eq!(
            again.render(&msgs, false).unwrap(),
            t.render(&msgs, false).unwrap()
        );
        assert_eq!(
            strip_generation_tags("a{%- generation -%}b{% endgeneration %}c{% if x %}"),
            "abc{% if x %}"
        );
        let ollama = t.to_ollama().unwrap();
        assert!(ollama.contains("<|im_start|>{{ .Role }}") && ollama.ends_with("assistant\n"));
        assert!(
            again.to_ollama().is_none(),
            "Jinja templates have no Ollama form"
        );
    }

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
