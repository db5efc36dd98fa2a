"""Selectors on real data: hand-computed Jaccard, CJK tokens, LSH recall, embeddings in a real Chroma
(embedded and a `chroma run` server), MMR diversity, seeded random picks, and no test-split leakage."""

from __future__ import annotations

import random

import pytest
from server_support import chroma_cli, chroma_run, free_port

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.icl.selectors import make_selector
from tunelab.icl.selectors.embedding import mmr
from tunelab.icl.selectors.jaccard import JaccardSelector
from tunelab.icl.selectors.tokens import jaccard, tokenize
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore, Example
from tunelab.stores.chroma_index import Neighbour

FRUIT = ["the cat sat on the mat", "a cat and a dog", "dogs chase cats", "the mat is red", "nothing in common here"]


def bank_of(conn, name: str, inputs: list[str], test_size: float = 0.0):
    rows = [ExampleRow(text, f"out {i}", i) for i, text in enumerate(inputs)]
    return BankStore(conn).create(name, rows, test_size=test_size).bank


def test_tokens_are_lowercased_words_and_cjk_characters_with_bigrams() -> None:
    assert tokenize("The CAT, the cat!") == {"the", "cat"}
    assert tokenize("我喜欢猫") == {"我", "喜", "欢", "猫", "我喜", "喜欢", "欢猫"}
    assert tokenize("GPU 显卡ok") == {"gpu", "显", "卡", "显卡", "ok"}
    assert jaccard(tokenize("我喜欢猫"), tokenize("我喜欢狗")) == pytest.approx(5 / 9)  # 我 喜 欢 我喜 喜欢 shared
    assert ["我喜欢猫"] == ["我喜欢猫"]  # what a plain split would have compared


def test_jaccard_scores_are_hand_computed_and_ties_broken_by_id(conn) -> None:
    bank = bank_of(conn, "fruit", FRUIT)
    selector = make_selector("jaccard", bank, conn, Settings())
    picks = selector.select("the cat on the mat", 3)
    # query {the, cat, on, mat}: "the cat sat on the mat" {the,cat,sat,on,mat} 4/5; "the mat is red" {the,mat,is,red} 2/6;
    # "a cat and a dog" {a,cat,and,dog} 1/7
    assert [(p.input, round(p.score, 4)) for p in picks] == [(FRUIT[0], 0.8), (FRUIT[3], round(2 / 6, 4)), (FRUIT[1], round(1 / 7, 4))]
    tie = make_selector("jaccard", bank_of(conn, "tie", ["red blue", "blue red", "red green"]), conn, Settings())
    assert [p.input for p in tie.select("red blue", 3)] == ["red blue", "blue red", "red green"]
    assert [p.score for p in tie.select("purple", 2)] == [0.0, 0.0]  # no overlap: still k examples, lowest ids first


def topical_texts(n_topics: int, per_topic: int, seed: int = 0) -> tuple[random.Random, list[str], list[list[str]], list[str]]:
    """Texts in families (6 of a topic's 8 words + 4 random ones): near neighbours exist, as in real banks."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(2000)]
    topics = [rng.sample(vocabulary, 8) for _ in range(n_topics)]
    texts = [" ".join(rng.sample(topic, 6) + rng.sample(vocabulary, 4)) for topic in topics for _ in range(per_topic)]
    return rng, vocabulary, topics, texts


def test_exact_scorer_matches_brute_force_ranking_with_common_words_and_ties() -> None:
    rng, _vocabulary, topics, texts = topical_texts(40, 10)
    texts = [f"the a {t}" if i % 3 else t for i, t in enumerate(texts)]  # common words touch most of the pool
    pool = [Example(3 * i + 7, t, "x", "train") for i, t in enumerate(texts)]
    selector = JaccardSelector(pool, "gen")
    for query in ["the a " + " ".join(rng.sample(rng.choice(topics), 5)) for _ in range(25)] + ["nothing shared"]:
        wanted = tokenize(query)
        brute = sorted(pool, key=lambda e: (-jaccard(wanted, tokenize(e.input)), e.id))[:6]
        picks = selector.select(query, 6)
        assert [p.id for p in picks] == [e.id for e in brute]
        assert [p.score for p in picks] == [jaccard(wanted, tokenize(e.input)) for e in brute]


def test_lsh_index_recall_against_exact_on_a_generated_bank() -> None:
    rng, vocabulary, topics, texts = topical_texts(150, 10)
    pool = [Example(i + 1, t, "x", "train") for i, t in enumerate(texts)]
    exact = JaccardSelector(pool, "gen")
    approximate = JaccardSelector(pool, "gen", exact_limit=1000)
    assert approximate.approximate and not exact.approximate
    hits = total = 0
    for _ in range(40):
        query = " ".join(rng.sample(rng.choice(topics), 6) + rng.sample(vocabulary, 3))
        truth = {p.id for p in exact.select(query, 5)}
        hits += len(truth & {p.id for p in approximate.select(query, 5)})
        total += 5
    assert hits / total >= 0.85, f"LSH recall@5 {hits / total:.2f}"


def test_random_is_seeded_per_query_and_checks_k(conn) -> None:
    bank = bank_of(conn, "fruit", FRUIT)
    one, two = make_selector("random", bank, conn, Settings(), seed=1), make_selector("random", bank, conn, Settings(), seed=1)
    assert [p.id for p in one.select("q", 3)] == [p.id for p in two.select("q", 3)]
    assert len({tuple(p.id for p in one.select(f"q{i}", 3)) for i in range(10)}) > 1
    with pytest.raises(TunelabError, match="k must be at least 1"):
        one.select("q", 0)
    with pytest.raises(TunelabError, match="larger than bank 'fruit'"):
        one.select("q", 6)
    with pytest.raises(TunelabError, match="unknown selector 'bm25'"):
        make_selector("bm25", bank, conn, Settings())


def test_mmr_prefers_a_different_example_over_a_near_duplicate() -> None:
    candidates = [Neighbour(1, 0.90, [1.0, 0.0]), Neighbour(2, 0.89, [1.0, 0.0]), Neighbour(3, 0.70, [0.0, 1.0])]
    assert [n.id for n in mmr(candidates, 2)] == [1, 3]
    assert [n.id for n in mmr(candidates, 2, weight=1.0)] == [1, 2]  # λ = 1 is plain relevance


def test_no_selector_ever_returns_a_test_example(conn, settings) -> None:
    texts = [f"review {i} about films and cats" for i in range(30)]
    bank = bank_of(conn, "leak", texts, test_size=0.3)
    test = BankStore(conn).examples("leak", "test")
    assert len(test) == 9
    test_ids = {e.id for e in test}
    for kind in ("random", "jaccard", "embedding", "mmr"):
        selector = make_selector(kind, bank, conn, settings)
        for example in test:  # the exact test input as the query: the strongest pull towards itself
            assert not {p.id for p in selector.select(example.input, 21)} & test_ids, kind


def test_embedding_selector_in_embedded_chroma_reindexes_only_new_examples(conn, settings) -> None:
    texts = ["How do I reset my password?", "The soup was too salty.", "My login does not work any more.", "Great pasta, lovely waiter."]
    bank = bank_of(conn, "support", texts)
    events: list[tuple[int, int]] = []
    selector = make_selector("embedding", bank, conn, settings, progress=lambda done, total: events.append((done, total)))
    assert selector.indexed == 4 and events[-1] == (4, 4)  # type: ignore[attr-defined]
    picks = selector.select("I can't sign in to my account", 2)
    assert {p.input for p in picks} == {texts[0], texts[2]}
    assert picks[0].score >= picks[1].score > 0.2
    assert (settings.home / "chroma").is_dir()

    BankStore(conn).add("support", [ExampleRow("Forgot my password again", "out", 0)])
    again = make_selector("embedding", BankStore(conn).get("support"), conn, settings)
    assert again.indexed == 1  # type: ignore[attr-defined]
    assert again.select("password reset", 1)[0].input in (texts[0], "Forgot my password again")


@pytest.fixture
def chroma_server(tmp_path):
    """A real `chroma run` on loopback (the CLI ships with chromadb)."""
    if chroma_cli() is None:
        pytest.skip("the chroma CLI is not installed")
    with chroma_run(tmp_path / "server") as url:
        yield url


@pytest.mark.slow
def test_embedding_selector_against_a_chroma_server(conn, settings, chroma_server) -> None:
    remote = Settings(home=settings.home, chroma_url=chroma_server)
    texts = ["How do I reset my password?", "The soup was too salty.", "My login does not work any more."]
    bank = bank_of(conn, "support", texts)
    selector = make_selector("mmr", bank, conn, remote)
    assert selector.select("can't log in", 1)[0].input in (texts[0], texts[2])
    assert not (settings.home / "chroma").exists()  # nothing was written to the embedded store

    down = Settings(home=settings.home, chroma_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TunelabError, match="is unreachable"):
        make_selector("embedding", bank, conn, down)
