//! Test tokenizers built from the GPT-2 files in `assets/`.

use std::path::PathBuf;

use manners_data::{Conversation, Message, Role};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

pub fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/gpt2-tokenizer")
}

/// GPT-2: BPE + ByteLevel (no prefix space) + `<|endoftext|>` = 50256.
pub fn gpt2() -> Tokenizer {
    let dir = assets();
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .expect("GPT-2 BPE files");
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    tok
}

/// GPT-2 plus the chat specials, as the model crate would add them:
/// `<|im_start|>` 50257, `<|im_end|>` 50258, `<s>` 50259, `</s>` 50260.
pub fn gpt2_chat() -> Tokenizer {
    let mut tok = gpt2();
    let added = tok.add_special_tokens(&[
        AddedToken::from("<|im_start|>", true),
        AddedToken::from("<|im_end|>", true),
        AddedToken::from("<s>", true),
        AddedToken::from("</s>", true),
    ]);
    assert_eq!(added, 4);
    tok
}

pub fn conv(pairs: &[(Role, &str)]) -> Conversation {
    Conversation::new(pairs.iter().map(|(r, c)| Message::new(*r, *c)).collect())
}

#[test]
fn gpt2_reference_encoding() {
    let tok = gpt2();
    let ids = tok
        .encode("Hello world<|endoftext|>", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids, vec![15496, 995, 50256]);
    let chat = gpt2_chat();
    assert_eq!(chat.token_to_id("<|im_start|>"), Some(50257));
    assert_eq!(chat.token_to_id("</s>"), Some(50260));
}
