import json

import pytest

from lm_gym import DEFAULT_PROMPTS, HELDOUT_PROMPTS, Prompt, load_prompts


def test_bundled_prompts_are_disjoint_train_and_held_out_sets():
    train, held_out = load_prompts(), load_prompts(HELDOUT_PROMPTS)
    assert load_prompts(None) == load_prompts(DEFAULT_PROMPTS)
    assert len(train) >= 8 and len(held_out) >= 4
    assert not {p.text for p in train} & {p.text for p in held_out}


def test_lists_of_strings_records_and_prompts():
    prompts = load_prompts(["a", {"prompt": "b", "references": "ref"}, Prompt("c", ("x", "y"))])
    assert prompts == [Prompt("a"), Prompt("b", ("ref",)), Prompt("c", ("x", "y"))]


def test_txt_and_jsonl_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert [p.text for p in load_prompts(txt)] == ["first prompt", "second prompt"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [{"prompt": "a", "references": ["r1", "r2"]}, {"prompt": "b"}]))
    assert load_prompts(str(jsonl)) == [Prompt("a", ("r1", "r2")), Prompt("b")]


def test_bad_prompt_sources_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts([])
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_prompts(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match=r"prompts\[1\].*'prompt'"):
        load_prompts(["ok", {"text": "wrong key"}])
    bad = tmp_path / "p.csv"
    bad.write_text("a\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_prompts(bad)
