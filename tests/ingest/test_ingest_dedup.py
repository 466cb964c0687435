"""Exact keys and MinHash near-duplicate detection."""
from ingest.dedup import MinHasher, NearIndex, dialogue_text, exact_key, system_key


def msgs(user, system="S"):
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_exact_key_ignores_outer_whitespace_only():
    assert exact_key(msgs("hello there")) == exact_key(msgs("  hello there\n"))
    assert exact_key(msgs("hello there")) != exact_key(msgs("hello  there"))
    assert exact_key(msgs("hello", "A")) != exact_key(msgs("hello", "B"))


def test_dialogue_text_drops_system_and_normalises():
    assert dialogue_text(msgs("  Hello\n\nWorld ")) == "u: hello world"
    assert system_key(msgs("x", "A")) == system_key(msgs("y", "A")) != system_key(msgs("x", "B"))


def test_near_duplicates_found_and_distinct_texts_not():
    h = MinHasher(64, 5)
    idx = NearIndex(0.85, 64)
    base = "I ordered a new card two weeks ago and it still has not arrived, what should I do?"
    idx.add("p", "a", h.minhash(msgs(base)))
    assert idx.find("p", h.minhash(msgs(base.replace("?", "!")))) == "a"
    assert idx.find("p", h.minhash(msgs(base.upper()))) == "a"  # case is normalised
    assert idx.find("p", h.minhash(msgs("How do I change the PIN on my debit card?"))) is None
    assert idx.find("other-partition", h.minhash(msgs(base))) is None


def test_long_texts_use_the_same_similarity_scale():
    import random

    rng = random.Random(0)
    words = ["card", "transfer", "pin", "refund", "fee", "account", "limit", "app", "top", "cash", "rate", "euro"]
    h = MinHasher(128, 5)
    a = " ".join(rng.choice(words) for _ in range(300))  # ~1,700 chars: the numpy path
    assert h.minhash_text(a).jaccard(h.minhash_text(a + " and one more clause")) > 0.8
    assert h.minhash_text(a).jaccard(h.minhash_text("lorem ipsum dolor sit amet " * 60)) < 0.2
