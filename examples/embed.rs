//! Sentence embeddings with the sentence-transformers settings of the folder.
//!
//! cargo run --release --example embed -- [MODEL] [TEXT...]
//! (MODEL defaults to sentence-transformers/all-MiniLM-L6-v2 in the HF cache;
//! scripts/setup-minilm.sh puts it there.)

use bertrt::tasks::embed::{EmbedOptions, Embedding};
use bertrt::{Device, Engine};

fn main() -> bertrt::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "sentence-transformers/all-MiniLM-L6-v2".into());
    let mut texts: Vec<String> = args.collect();
    if texts.is_empty() {
        texts = vec![
            "Beijing is a beautiful city".into(),
            "Paris is the capital of France".into(),
        ];
    }
    let engine = Engine::load(&model, Device::Auto)?;
    let opts = EmbedOptions::from_model_dir(&engine.dir)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (text, e) in texts.iter().zip(engine.embed(&refs, &opts)?) {
        if let Embedding::Vector(v) = e {
            println!("{text:?}: {} dims, first {:?}", v.len(), &v[..4]);
        }
    }
    Ok(())
}
