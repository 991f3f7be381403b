//! Extractive QA with SQuAD v2 semantics (the empty answer can win), from
//! several threads sharing one engine.
//!
//! cargo run --release --example qa -- MODEL_FOLDER

use bertrt::tasks::qa::QaOptions;
use bertrt::{Device, Engine};

fn main() -> bertrt::Result<()> {
    let model = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/models/bert_qa".into());
    let engine = Engine::load(&model, Device::Auto)?;
    let opts = QaOptions {
        handle_impossible_answer: true,
        ..QaOptions::hf_defaults(&engine)
    };
    let questions = ["Who wrote Moby Dick?", "When was it published?"];
    let context = "Herman Melville wrote Moby Dick, which was published in 1851.";
    // Engine is Send + Sync: threads share it by reference.
    std::thread::scope(|s| {
        for q in questions {
            let (engine, opts) = (&engine, &opts);
            s.spawn(move || match engine.qa(&[(q, context)], opts) {
                Ok(a) => println!("{q} -> {:?}", a[0][0]),
                Err(e) => eprintln!("{q}: {e}"),
            });
        }
    });
    Ok(())
}
