#!/usr/bin/env python3
"""Seeded short English-like sentences for the MiniLM embedding job.

Words come from scripts/data/words.txt (the 4,000 commonest lowercase English
words, commonest first, taken in the order of BERT's uncased WordPiece
vocabulary, which lists whole words by corpus frequency) and are drawn with
Zipf weights 1/(rank + 10), so "the" and "of" are common as in real text.
Lengths in words are lognormal (sigma 0.5, mean MEAN_WORDS), at least 2.
Each sentence is capitalised and ends with a full stop. Same seed, same text
(Python's own `random`, no numpy).

    python3 scripts/gen_sentences.py [-n 1000] [--seed 0] > sentences.txt
"""

import argparse
import math
import os
import random

WORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "words.txt")
MEAN_WORDS = 17.0
SIGMA = 0.5


def load_words(path=WORDS):
    with open(path) as f:
        words = [w.strip() for w in f if w.strip()]
    if len(words) < 1000:
        raise SystemExit(f"{path}: {len(words)} words; expected a few thousand, one a line")
    return words


def sentences(n, seed, words=None):
    words = words or load_words()
    rng = random.Random(seed)
    weights = [1.0 / (rank + 10) for rank in range(len(words))]
    mu = math.log(MEAN_WORDS) - SIGMA**2 / 2  # lognormal mean = exp(mu + sigma^2 / 2)
    out = []
    for _ in range(n):
        k = max(2, round(rng.lognormvariate(mu, SIGMA)))
        picked = rng.choices(words, weights=weights, k=k)
        out.append(" ".join(picked).capitalize() + ".")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for s in sentences(args.n, args.seed):
        print(s)


if __name__ == "__main__":
    main()
