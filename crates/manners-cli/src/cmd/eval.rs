//! `manners eval` and `manners compare`: held-out answers, losses and a fact cloze.

use std::process::ExitCode;

use anyhow::Context;
use manners::train::eval::{
    EvalOptions, EvalSummary, PromptMode, comparison_markdown, evaluate, samples_markdown,
};
use manners_recipes::default_run::before_after;
use manners_recipes::eval_data::{EvalDataSpec, load_eval_data, read_prompts};

use crate::args::{CompareArgs, EvalArgs, EvalDataArgs};

fn spec(a: &EvalDataArgs) -> EvalDataSpec {
    EvalDataSpec {
        data: a.data.clone(),
        facts: a.facts.clone(),
        text: a.text.clone(),
        cloze: a.cloze,
        limit: a.limit,
        tools: a.tools,
    }
}

fn print_summary(s: &EvalSummary) {
    println!("== {} ==", s.label);
    if let Some(a) = &s.answers {
        println!("questions           {} ({})", a.n, a.mode);
        println!("clean stop          {:.1}%", 100.0 * a.clean_stop_rate);
        println!(
            "answer accuracy     {:.1}%  (exact {:.1}%)",
            100.0 * a.accuracy,
            100.0 * a.exact
        );
        for k in &a.by_kind {
            println!("  {:<26} {:>4}  {:.1}%", k.kind, k.n, 100.0 * k.accuracy);
        }
        println!("mean response       {:.1} tokens", a.mean_response_tokens);
    }
    if let Some(l) = s.response_loss {
        println!("response loss       {l:.4}");
    }
    if let Some(l) = s.text_loss {
        println!("raw-text loss       {l:.4}");
    }
    if let Some(t) = &s.tools {
        println!(
            "tool use            {:.1}% lookup calls, {:.1}% with the right entity and field, {:.1}% right answers after the call ran ({} questions)",
            100.0 * t.any_call_rate,
            100.0 * t.call_rate,
            100.0 * t.answer_accuracy,
            t.n
        );
        for x in t.samples.iter().take(3) {
            println!(
                "  {} {} → call {} → {:?} → {}",
                if x.correct { "✓" } else { "✗" },
                x.question,
                x.call.replace('\n', " ⏎ "),
                x.result,
                x.answer.replace('\n', " ⏎ ")
            );
        }
    }
    if let Some(c) = &s.cloze {
        println!("capital cloze top-1 {:.1}% of {}", 100.0 * c.accuracy, c.n);
        for (p, a, cont, ok) in c.samples.iter().take(5) {
            println!(
                "  {} {p} → {} (want {a})",
                if *ok { "✓" } else { "✗" },
                cont.replace('\n', " ⏎ ")
            );
        }
    }
}

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let dev = super::device(a.backend.backend, a.json)?;
    let m = manners::load_model_dir(&a.model, &dev.device)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let assets = manners_recipes::assets_dir().ok();
    let data = load_eval_data(&spec(&a.data), assets.as_deref())?;
    let mode = if a.raw {
        PromptMode::Raw
    } else {
        let t = manners::chat_template(&m.tokenizer, Some(&a.model), a.template.as_deref())?;
        let missing: Vec<String> = t
            .required_special_tokens()
            .into_iter()
            .filter(|s| m.tokenizer.token_id(s).is_none())
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "{} lacks the template's special tokens {missing:?}; use --raw or --template",
                a.model.display()
            );
        }
        PromptMode::Chat(t)
    };
    let opts = EvalOptions {
        max_new_tokens: a.max_new_tokens,
        ..EvalOptions::default()
    };
    let s = evaluate(
        &a.model.display().to_string(),
        &m.model,
        &m.tokenizer,
        &mode,
        &data,
        &opts,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_summary(&s);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn compare(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let dev = super::device(a.backend.backend, false)?;
    let assets = manners_recipes::assets_dir().ok();
    let mut data = load_eval_data(&spec(&a.data), assets.as_deref())?;
    if let Some(p) = &a.prompts {
        data.conversations = read_prompts(p)?;
        data.references = None;
    }
    let opts = EvalOptions {
        max_new_tokens: a.max_new_tokens,
        keep_samples: a.show,
        ..EvalOptions::default()
    };
    let cols = before_after(&a.base, &a.tuned, &data, &dev.device, &opts)?;
    println!("{}", comparison_markdown(&cols));
    println!("{}", samples_markdown(&cols, a.show));
    Ok(ExitCode::SUCCESS)
}
