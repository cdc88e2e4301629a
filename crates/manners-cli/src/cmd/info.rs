//! `manners info`: what a model folder holds.

use anyhow::Context;
use serde_json::json;

use crate::args::{InfoArgs, ServeDeviceArgs};

pub fn run(a: InfoArgs) -> anyhow::Result<std::process::ExitCode> {
    if a.devices {
        devices(a.json)?;
        if a.model.is_none() {
            return Ok(std::process::ExitCode::SUCCESS);
        }
        println!();
    }
    let Some(model) = &a.model else {
        anyhow::bail!("give --model DIR (or --devices)");
    };
    // Loading on flex checks the weights too (every key and shape), not only the config.
    let dev = manners::select_device(manners::BackendKind::Flex)?;
    let m = manners::load_model_dir(model, &dev.device)
        .with_context(|| format!("loading {}", model.display()))?;
    let c = &m.config;
    let specials = m.tokenizer.special_tokens();
    if a.json {
        let v = json!({
            "path": model,
            "model_type": c.model_type(),
            "config": c,
            "params": c.num_params(),
            "dtype": m.dtype.torch_name(),
            "tokenizer": {
                "vocab_size": m.tokenizer.vocab_size(),
                "bos": m.tokenizer.bos_token(),
                "eos": m.tokenizer.eos_token(),
                "pad": m.tokenizer.pad_token(),
                "special_tokens": specials.iter().map(|(id, t)| json!({"id": id, "token": t})).collect::<Vec<_>>(),
                "chat_template": m.tokenizer.chat_template(),
            },
            "generation": {"eos_token_ids": m.generation.eos_token_ids},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!("model       {}", model.display());
    println!("shape       {}", c.describe());
    println!(
        "params      {} ({} exactly)",
        manners::human_count(c.num_params() as u64),
        c.num_params()
    );
    match c {
        manners::ModelConfig::Gpt2(c) => {
            println!(
                "layers      n_layer {}  n_head {}  n_embd {}  n_inner {}  n_positions {}",
                c.n_layer,
                c.n_head,
                c.n_embd,
                c.inner(),
                c.n_positions
            );
            println!(
                "activation  {:?}  layer_norm_epsilon {}  dropout {}",
                c.activation, c.layer_norm_epsilon, c.dropout
            );
        }
        manners::ModelConfig::Llama(c) => {
            println!(
                "layers      {} layers  {} heads ({} key/value, head_dim {})  hidden {}  mlp {}",
                c.num_hidden_layers,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                c.hidden_size,
                c.intermediate_size
            );
            println!(
                "positions   {} (rope_theta {}, scaling {:?})  rms_norm_eps {}",
                c.max_position_embeddings, c.rope_theta, c.rope_scaling, c.rms_norm_eps
            );
            println!(
                "parts       qkv bias {}  q/k norm {}  tied head {}",
                c.qkv_bias, c.qk_norm, c.tie_word_embeddings
            );
        }
    }
    println!("weights     {}", m.dtype.torch_name());
    println!(
        "tokenizer   {} tokens (embedding rows {})",
        m.tokenizer.vocab_size(),
        c.vocab_size()
    );
    let show = |t: Option<&str>| {
        t.map(|s| format!("{s:?} = {}", m.tokenizer.token_id(s).unwrap_or(u32::MAX)))
            .unwrap_or_else(|| "none".into())
    };
    println!("bos         {}", show(m.tokenizer.bos_token()));
    println!("eos         {}", show(m.tokenizer.eos_token()));
    println!("pad         {}", show(m.tokenizer.pad_token()));
    println!(
        "specials    {}",
        specials
            .iter()
            .map(|(id, t)| format!("{t} ({id})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("stop ids    {:?}", m.default_stop_ids());
    match m.tokenizer.chat_template() {
        Some(t) => println!("chat tmpl   {} chars of Jinja", t.len()),
        None => println!("chat tmpl   none"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `manners info --devices`: what each compiled backend sees, and what `auto` picks.
fn devices(json: bool) -> anyhow::Result<()> {
    let seen = manners::list_devices();
    let auto = manners::select_device(manners::BackendKind::Auto)
        .map(|c| c.description)
        .unwrap_or_else(|e| format!("none ({e})"));
    if json {
        let v = json!({
            "backends": seen.iter().map(|(k, d)| json!({"backend": k.name(), "devices": d})).collect::<Vec<_>>(),
            "auto": auto,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (kind, devs) in &seen {
        if *kind == manners::BackendKind::Remote {
            println!(
                "remote   by address: --devices ws://HOST:PORT[#N] (start `manners serve-device` there)"
            );
            continue;
        }
        if devs.is_empty() {
            println!("{:<8} (compiled in; no device found)", kind.name());
        }
        for (i, d) in devs.iter().enumerate() {
            let name = if i == 0 { kind.name() } else { "" };
            println!("{name:<8} {d}");
        }
    }
    let missing: Vec<&str> = ["cuda", "rocm", "wgpu"]
        .into_iter()
        .filter(|b| !seen.iter().any(|(k, _)| k.name() == *b))
        .collect();
    if !missing.is_empty() {
        println!(
            "not compiled in: {} (cargo build --release --features {})",
            missing.join(", "),
            missing[0]
        );
    }
    println!("auto     {auto}");
    Ok(())
}

/// `manners serve-device`: lends this machine's devices to runs elsewhere (Burn's remote backend
/// over WebSocket) until stopped.
pub fn serve_device(a: ServeDeviceArgs) -> anyhow::Result<std::process::ExitCode> {
    if !manners::BackendKind::compiled().contains(&manners::BackendKind::Remote) {
        anyhow::bail!(
            "serving devices needs a build with the `remote` feature: cargo build --release \
             --features remote (add cuda for NVIDIA GPUs)"
        );
    }
    let backend = a.backend.backend.into();
    let set = match &a.devices {
        Some(spec) => manners::parse_devices(spec, backend)?,
        None => manners::select_device(backend)?.into(),
    };
    let listener = std::net::TcpListener::bind((a.host.as_str(), a.port))
        .with_context(|| format!("listening on {}:{}", a.host, a.port))?;
    let addr = listener.local_addr()?;
    for (i, d) in set.devices.iter().enumerate() {
        eprintln!("serving {} as ws://{addr}#{i}", d.description);
    }
    eprintln!("(Ctrl+C stops; the protocol has no authentication: trusted networks only)");
    let devices = set.devices.into_iter().map(|d| d.device).collect();
    manners::serve_devices(devices, listener)?;
    Ok(std::process::ExitCode::SUCCESS)
}
