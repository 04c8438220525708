import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub: every model is bundled or built here
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

import lm_gym

hf_logging.disable_progress_bar()
# Under pytest-xdist each worker gets one core; two threads each would oversubscribe a 2-core machine.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def bundled_tokenizer():
    return lm_gym.load_tokenizer()


@pytest.fixture(scope="session")
def local_model_dir(tmp_path_factory):
    """A small random GPT-2 that is not the bundled one, saved like a hub checkpoint, with a tokenizer
    that (like GPT-2's) has no pad token and whose vocabulary is smaller than the model's logits."""
    path = tmp_path_factory.mktemp("hub") / "tiny-gpt2-nopad"
    tokenizer = AutoTokenizer.from_pretrained(lm_gym.DEFAULT_MODEL)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(path)
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=len(tokenizer) + 64, n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    """A tiny random sentiment classifier with NEGATIVE/POSITIVE labels, saved like a hub checkpoint."""
    path = tmp_path_factory.mktemp("clf")
    tokenizer = AutoTokenizer.from_pretrained(lm_gym.DEFAULT_MODEL)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, num_labels=2,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
                        pad_token_id=tokenizer.pad_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def cli_error(capsys):
    """``cli_error(*argv)``: run ``lm-gym argv`` expecting a user error; returns its one line (exit code 2, no
    traceback), as a user sees it."""
    from agents.runs.cli import main

    def run(*argv: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err and err.startswith(f"lm-gym {argv[0]}: error: "), err
        return err

    return run
