"""Evaluations: task generators, planting at depths, strategies compared, reports and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from hybridctx.errors import InvalidArgumentError
from hybridctx.evals.tasks import (
    GENERATORS,
    TaskRandom,
    aggregation_case,
    cut_haystack,
    hard_distractors,
    multi_query,
    plant_at_depths,
    variable_tracking,
)
from hybridctx.schema import Document

ESSAY = " ".join(f"Sentence number {i} talks about startups and founders." for i in range(400))


def test_needles_land_at_their_depth_after_a_sentence_end():
    docs = [Document(id="a", text=ESSAY), Document(id="b", text=ESSAY)]
    planted = plant_at_depths(docs, [("NEEDLE-START.", 0.0), ("NEEDLE-MIDDLE.", 0.5), ("NEEDLE-END.", 1.0)])
    whole = " ".join(d.text for d in planted)
    assert whole.startswith("NEEDLE-START.") and whole.endswith("NEEDLE-END.")
    middle = whole.index("NEEDLE-MIDDLE.") / len(whole)
    assert 0.45 < middle < 0.55
    assert re.search(r"founders\. NEEDLE-MIDDLE\. Sentence", whole)  # between sentences, not inside one
    with pytest.raises(InvalidArgumentError, match="depth 1.5"):
        plant_at_depths(docs, [("x", 1.5)])


def test_haystacks_are_cut_to_length_at_paragraph_ends(tokenizer):
    docs = [Document(id=f"d{i}", text="\n\n".join([ESSAY[:500]] * 6)) for i in range(5)]
    cut = cut_haystack(docs, tokenizer, 1500)
    total = sum(tokenizer.count(d.text) for d in cut)
    assert 1500 - tokenizer.count(ESSAY[:500]) - 2 <= total <= 1500
    assert all(d.text.endswith(ESSAY[:500]) for d in cut)  # whole paragraphs only
    # One paragraph longer than the haystack: cut at a word end instead of giving up.
    [words] = cut_haystack([Document(id="one", text=ESSAY)], tokenizer, 300)
    assert 290 <= tokenizer.count(words.text) <= 300 and ESSAY.startswith(words.text + " ")
    with pytest.raises(InvalidArgumentError, match="haystack length 1"):
        cut_haystack([Document(id="long", text="Supercalifragilistic " * 3)], tokenizer, 1)


def test_generators_are_seeded_and_make_hard_tasks():
    def all_cases(seed):
        rng = TaskRandom(seed)
        return [c for g in GENERATORS.values() for c in g(rng, [0.0, 1.0])]

    first = all_cases(3)
    assert first == all_cases(3) and first != all_cases(4)
    assert len({c.question for c in first}) == len(first)  # no key is used twice in one run

    [hard] = hard_distractors(TaskRandom(1), [])
    key = hard.question.removeprefix("What is the special magic number for ").removesuffix("?")
    for distractor in hard.distractors:
        twin = distractor.split(" for ")[1].split(" is ")[0]
        assert twin != key and len(twin) == len(key) and sum(a != b for a, b in zip(twin, key)) == 1

    [chain] = variable_tracking(TaskRandom(2), [], hops=4)
    value = chain.question.split("value ")[1].split(",")[0]
    assert chain.needles[0] == f"VAR {chain.values[0]} = {value}."
    for a, b, line in zip(chain.values, chain.values[1:], chain.needles[1:]):
        assert line == f"VAR {b} = VAR {a}."
    assert not set(chain.values) & set(chain.distractor_values)

    [query] = multi_query(TaskRandom(4), [])
    assert all(v in " ".join(query.needles) for v in query.values)
    assert query.answer_score(f"{query.values[0]} and {query.values[1]}") == 1.0
    assert query.answer_score(query.values[0]) == 0.5


def test_aggregation_lists_its_common_words_most_often(tokenizer):
    case, document = aggregation_case(TaskRandom(5), tokenizer, 2000)
    assert tokenizer.count(document.text) >= 2000
    counts = Counter(re.findall(r"[a-z]+", document.text))
    assert {w for w, _ in counts.most_common(10)} == set(case.values)
    assert case.context_score(document.text) == 1.0
    rare = [w for w in case.vocabulary if w not in case.values]
    assert case.context_score(" ".join(rare * 5 + case.values[:4])) < 0.5


@pytest.mark.slow
def test_an_eval_compares_the_strategies_and_writes_its_report(open_pipe, tmp_path):
    from hybridctx.evals import EvalConfig, report, run_eval

    config = EvalConfig(tasks=["needle", "hard_distractors", "aggregation"], lengths=[3000], budgets=[700, 2600],
                        depths=[0.0, 1.0], answers=True, answer_budgets=[700], answer_tokens=24, k=200)
    made = []

    def factory(folder):
        made.append(open_pipe(folder.name, k=config.k))
        return made[-1]

    result = run_eval(config, factory, show_progress=False)
    by = {(r.task, r.depths[0] if r.task == "needle" else None, r.strategy, r.budget, r.answer is not None): r
          for r in result.records}
    # Stuffing reads the haystack's first tokens: it has the needle at depth 0, not at depth 1.
    assert by["needle", 0.0, "stuffing", 700, False].context_score == 1.0
    assert by["needle", 1.0, "stuffing", 700, False].context_score == 0.0
    # Generous hybrid recall finds an invented name wherever it sits.
    assert by["needle", 1.0, "hybridctx", 700, False].context_score == 1.0
    assert by["needle", 1.0, "hybridctx", 700, False].needle_positions[0] is not None
    assert by["hard_distractors", None, "hybridctx", 2600, False].context_score == 1.0
    assert all(r.prompt_tokens <= r.budget for r in result.records)
    answered = [r for r in result.records if r.answer is not None]
    assert len(answered) == 4 * 3  # 4 cases (2 needles, distractors, aggregation) x 3 strategies at one budget
    assert all(r.answer_score in (0.0, 1.0) or r.task == "aggregation" for r in answered)

    paths = report.write(result, tmp_path / "out")
    assert {p.name for p in paths} == {"results.json", "heatmap.png", "answer_heatmap.png", "coverage.png"}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["records"]) == len(result.records)
    for png in paths[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = report.markdown_table(result)
    assert rows[0].count("@") == 2 * 3 and any(r.startswith("| needle |") for r in rows)


@pytest.mark.slow
def test_cli_eval_quick_at_a_small_size_and_its_bad_input(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "hybridctx", "eval", "--quick", "--tasks", "needle,multi_value", "--lengths", "1500",
         "--budgets", "500", "--depths", "0,1", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "needle" in done.stdout and "hybridctx" in done.stdout and "stuffing" in done.stdout
    records = json.loads((out / "results.json").read_text())["records"]
    assert {r["task"] for r in records} == {"needle", "multi_value"} and {r["budget"] for r in records} == {500}
    assert (out / "heatmap.png").exists() and (out / "coverage.png").exists()

    command = [sys.executable, "-m", "hybridctx", "eval"]
    bad = subprocess.run([*command, "--lengths", "big"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--lengths 'big'" in bad.stderr
    bad = subprocess.run([*command, "--tasks", "haystacks"], capture_output=True, text=True)
    assert bad.returncode == 2 and "haystacks" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "hybridctx", "eval", "--answers", "--answer-lengths", "8k"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--answer-lengths '8k'" in bad.stderr


def test_paired_differences_come_with_a_95_percent_interval():
    from hybridctx.evals.report import paired_difference

    assert paired_difference([(1.0, 0.0)] * 20) == (1.0, 1.0, 1.0)
    diff, low, high = paired_difference([(1.0, 0.0)] * 10 + [(0.0, 1.0)] * 10)
    assert diff == 0.0 and low < 0 < high  # a coin flip is not a difference
    diff, low, high = paired_difference([(1.0, 0.0)] * 18 + [(0.0, 1.0)] * 2)
    assert diff == 0.8 and 0.4 < low < diff < high <= 1.0


def test_the_comparison_pairs_each_question_with_the_stronger_other_strategy():
    from hybridctx.evals import EvalConfig, EvalResult, Record, report

    def record(question, strategy, score, citation=None, wrong=0.0, right=None):
        return Record(task="multi_key", question=question, length=8000, budget=2000, strategy=strategy,
                      depths=[0.5], context_score=1.0, prompt_tokens=100, needle_positions=[0.5],
                      answer="x", answer_score=score, citation_score=citation, distractor_score=wrong,
                      precision_score=right)

    records = []
    for i in range(10):
        records += [record(f"q{i}", "top5", 1.0 if i < 6 else 0.0, wrong=0.2 if i < 5 else 0.0,
                           right=0.25 if i < 6 else None),  # four numbers, one right; none given
                    record(f"q{i}", "stuffing", 0.0),
                    record(f"q{i}", "hybridctx", 1.0 if i < 8 else 0.0, citation=1.0 if i < 4 else 0.0,
                           wrong=0.2 if i < 2 else 0.0, right=1.0 if i < 8 else 0.0)]
    result = EvalResult(config=EvalConfig(answers=True), records=records, seconds=1.0)
    header, rule, row = report.comparison(result)
    assert "95% CI" in header and rule.count("---") == header.count("|") - 1
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["multi_key", "2,000", "10", "0.60", "0.00", "0.80"]
    assert cells[6].startswith("+0.20 [") and cells[6].endswith("vs top5")
    assert cells[7] == "0.40 (10 cited)"
    assert cells[8] == "0.04 hybridctx, 0.10 top5"  # the planted wrong values each one named
    assert cells[9] == "0.80 hybridctx, 0.25 top5"  # the names given that are right, where any were


def test_a_question_asked_again_in_another_repeat_is_paired_by_its_turn():
    from hybridctx.evals import EvalConfig, EvalResult, Record, report

    def record(strategy, score):
        return Record(task="aggregation", question="same", length=8000, budget=2000, strategy=strategy, depths=[],
                      context_score=1.0, prompt_tokens=100, needle_positions=[], answer="x", answer_score=score)

    records = [r for turn in range(4) for r in (record("top5", 0.0), record("hybridctx", 1.0 if turn else 0.0))]
    result = EvalResult(config=EvalConfig(answers=True, strategies=["top5", "hybridctx"]), records=records, seconds=1)
    cells = [c.strip() for c in report.comparison(result)[2].strip("|").split("|")]
    assert cells[2:5] == ["4", "0.00", "0.75"] and cells[5].startswith("+0.75 [")
    assert cells[6:] == ["-", "-", "-"]  # nothing cited, no wrong values planted, no names given
