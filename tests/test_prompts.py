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


@pytest.fixture
def dataset_dirs(tmp_path):
    """A directory of data files (what load_dataset reads) and a save_to_disk directory."""
    import datasets

    files = tmp_path / "files"
    files.mkdir()
    rows = [{"text": f"review {i}", "refs": [f"ref {i}"]} for i in range(10)]
    (files / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:8]))
    (files / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[8:]))
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:8]),
                          "test": datasets.Dataset.from_list(rows[8:])}).save_to_disk(str(saved))
    return files, saved


def test_prompts_from_hugging_face_datasets(dataset_dirs):
    from lm_gym import dataset_prompts

    for path in dataset_dirs:
        train = load_prompts({"dataset": str(path), "column": "text", "references_column": "refs"})
        assert train[0] == Prompt("review 0", ("ref 0",)) and len(train) == 8
        test = dataset_prompts(path, column="text", split="test")
        assert [p.text for p in test] == ["review 8", "review 9"] and test[0].references == ()
        sliced = dataset_prompts(path, column="text", split="train[2:4]+test[:1]")  # load_dataset's slicing
        assert [p.text for p in sliced] == ["review 2", "review 3", "review 8"]
    with pytest.raises(ValueError, match="split='valid'"):
        dataset_prompts(dataset_dirs[1], column="text", split="valid")
    with pytest.raises(ValueError, match="column='txt'.*columns are"):
        dataset_prompts(dataset_dirs[0], column="txt")


def test_split_prompts_is_reproducible_and_disjoint():
    from lm_gym import split_prompts

    prompts = load_prompts([f"p{i}" for i in range(20)])
    train, held_out = split_prompts(prompts, 0.25, seed=3)
    assert len(held_out) == 5 and len(train) == 15 and not set(train) & set(held_out)
    assert split_prompts(prompts, 0.25, seed=3) == (train, held_out)
    assert split_prompts(prompts, 0.25, seed=4)[1] != held_out
    with pytest.raises(ValueError, match="held_out"):
        split_prompts(prompts, 1.0)
