//! Extractive QA against HF's question-answering pipeline
//! (tests/fixtures/golden/pipelines.json, key `question_answering`).

mod common;

use bertrt::tasks::qa::{qa, qa_many, Answer, QaOptions};
use bertrt::{Device, Engine};
use common::*;
use serde_json::Value;

/// (options key, options, [(question, context, answers)]).
type OptionGroup = (String, QaOptions, Vec<(String, String, Vec<Answer>)>);

fn pipelines() -> Value {
    let p = fixtures().join("golden/pipelines.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The fixture model's engine; every one must load (bert_qa from its
/// vocab.txt alone).
fn engine(name: &str) -> Engine {
    Engine::load_dir(&model_dir(name), Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn options(args: &Value) -> QaOptions {
    let u = |k: &str| args[k].as_u64().unwrap() as usize;
    QaOptions {
        top_k: u("top_k"),
        doc_stride: u("doc_stride"),
        max_answer_len: u("max_answer_len"),
        max_seq_len: u("max_seq_len"),
        max_question_len: u("max_question_len"),
        handle_impossible_answer: args["handle_impossible_answer"].as_bool().unwrap(),
        align_to_words: args["align_to_words"].as_bool().unwrap(),
    }
}

/// Score tolerance: absolute 1e-5.
const ATOL: f64 = 1e-5;

/// Differences between `got` and the golden output (a dict for one answer,
/// else a list), or None when they agree.
/// Text, start and end exactly; score within `ATOL`. (A score-0 empty
/// answer's start/end follow numpy's AVX-512 argpartition, as the goldens
/// were made; see src/tasks/qa.rs.)
fn diff(got: &[Answer], want: &Value) -> Option<String> {
    let want: Vec<&Value> = match want {
        Value::Array(a) => a.iter().collect(),
        w => vec![w],
    };
    if got.len() != want.len() {
        return Some(format!("{} answers, want {}", got.len(), want.len()));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let ws = w["score"].as_f64().unwrap();
        let wa = w["answer"].as_str().unwrap();
        let (wst, wen) = (
            w["start"].as_u64().unwrap() as usize,
            w["end"].as_u64().unwrap() as usize,
        );
        if g.answer != wa || (g.score as f64 - ws).abs() > ATOL || (g.start, g.end) != (wst, wen) {
            return Some(format!("[{k}] got {g:?}, want {w}"));
        }
    }
    None
}

fn goldens_for(model: &str) {
    let eng = engine(model);
    let p = pipelines();
    let contexts = &p["qa_contexts"];
    let mut n = 0;
    let mut failures = Vec::new();
    // For the batched check: every case, grouped by options.
    let mut groups: Vec<OptionGroup> = Vec::new();
    for c in p["question_answering"].as_array().unwrap() {
        if c["model"] != model {
            continue;
        }
        n += 1;
        let question = c["question"].as_str().unwrap();
        let cname = c["context_name"].as_str().unwrap();
        let context = contexts[cname].as_str().unwrap();
        let opts = options(&c["args"]);
        let got = qa(&eng, question, context, &opts)
            .unwrap_or_else(|e| panic!("{model} {cname} {question:?}: {e}"));
        if let Some(d) = diff(&got, &c["output"]) {
            failures.push(format!("{model} {cname} {question:?} {}: {d}", c["args"]));
        }
        let key = format!("{:?}", opts);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.2.push((question.into(), context.into(), got)),
            None => groups.push((key, opts, vec![(question.into(), context.into(), got)])),
        }
    }
    assert!(n > 0, "no question-answering goldens for {model}");
    eprintln!("{model}: {} of {n} goldens agree", n - failures.len());
    assert!(
        failures.is_empty(),
        "{} of {n} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // One packed forward over many items gives the same answers.
    for (_, opts, cases) in &groups {
        let items: Vec<(&str, &str)> = cases.iter().map(|c| (c.0.as_str(), c.1.as_str())).collect();
        let many = qa_many(&eng, &items, opts).unwrap();
        assert_eq!(many.len(), cases.len());
        for (m, c) in many.iter().zip(cases) {
            assert_eq!(m.len(), c.2.len(), "{model} batched {:?}", c.0);
            for (a, b) in m.iter().zip(&c.2) {
                assert_eq!((&a.answer, a.start, a.end), (&b.answer, b.start, b.end));
                assert!(
                    (a.score - b.score).abs() <= 1e-5,
                    "{model} batched: {a:?} vs {b:?}"
                );
            }
        }
    }
}

#[test]
fn qa_goldens_roberta() {
    goldens_for("roberta_qa");
}

#[test]
fn qa_goldens_bert() {
    goldens_for("bert_qa");
}

fn err(eng: &Engine, q: &str, c: &str, opts: &QaOptions) -> String {
    match qa(eng, q, c, opts) {
        Ok(a) => panic!("expected an error for {q:?} / {c:?} / {opts:?}, got {a:?}"),
        Err(e) => {
            assert!(
                matches!(e, bertrt::Error::Input(_)),
                "not an input error: {e}"
            );
            e.to_string()
        }
    }
}

fn small() -> QaOptions {
    QaOptions {
        max_seq_len: 64,
        doc_stride: 32,
        ..QaOptions::default()
    }
}

#[test]
fn qa_bad_inputs() {
    let eng = engine("roberta_qa");
    let ctx = "Herman Melville wrote Moby Dick in 1851.";
    let e = err(&eng, "", ctx, &small());
    assert!(e.contains("question"), "{e}");
    let e = err(&eng, "Who?", "", &small());
    assert!(e.contains("context"), "{e}");
    let e = err(&eng, "Who?", " \n\t ", &small());
    assert!(e.contains("context"), "{e}");
    let e = err(
        &eng,
        "Who?",
        ctx,
        &QaOptions {
            top_k: 0,
            ..small()
        },
    );
    assert!(e.contains("top_k"), "{e}");
    let e = err(
        &eng,
        "Who?",
        ctx,
        &QaOptions {
            max_answer_len: 0,
            ..small()
        },
    );
    assert!(e.contains("max_answer_len"), "{e}");
    // Over the model's limit (max_position_embeddings 66 -> 64 tokens).
    let e = err(&eng, "Who?", ctx, &QaOptions::default());
    assert!(e.contains("max_seq_len"), "{e}");
    let e = err(
        &eng,
        "Who?",
        ctx,
        &QaOptions {
            doc_stride: 65,
            ..small()
        },
    );
    assert!(e.contains("doc_stride"), "{e}");
    let e = err(
        &eng,
        "Who?",
        ctx,
        &QaOptions {
            doc_stride: 63,
            ..small()
        },
    );
    assert!(e.contains("doc_stride"), "{e}");
    // A long context needs windows: a stride as large as the context part of
    // a window is refused (HF: tokenizers' stride assertion).
    let long = pipelines()["qa_contexts"]["long"]
        .as_str()
        .unwrap()
        .to_string();
    let e = err(
        &eng,
        "Where does the river flow?",
        &long,
        &QaOptions {
            doc_stride: 55,
            ..small()
        },
    );
    assert!(e.contains("doc_stride"), "{e}");
    // A question leaving no room for context.
    let q = "why ".repeat(80);
    let e = err(&eng, &q, &long, &small());
    assert!(e.contains("question"), "{e}");
    // The wrong head.
    let cls = engine("roberta_cls");
    let e = err(&cls, "Who?", ctx, &small());
    assert!(e.contains("ForQuestionAnswering"), "{e}");
    // Errors in qa_many name the item.
    let e = qa_many(&eng, &[("Who?", ctx), ("", ctx)], &small())
        .unwrap_err()
        .to_string();
    assert!(e.contains("item 1"), "{e}");
    // Fine inputs still work, including HF's defaults for this model.
    let a = qa(
        &eng,
        "Who wrote Moby Dick?",
        ctx,
        &QaOptions::hf_defaults(&eng),
    )
    .unwrap();
    assert_eq!(a.len(), 1);
    assert!(qa_many(&eng, &[], &small()).unwrap().is_empty());
}
