"""What a user gets wrong gets one line naming the argument and the fix (exit code 2), never a traceback; a run
that fails before training leaves no directory behind."""

import pytest

from agents.runs.config import ConfigTypeError, TrainConfig

QUICK = ["--steps", "64", "--n-envs", "2", "--n-steps", "32", "--max-new-tokens", "4", "--eval-samples", "1"]


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "the film"}\n\n{bad\n', "line 3 is not JSON (Expecting property name"),
    (b'{"prompt": ""}\n', "bad.jsonl:1: the prompt is empty"),
    (b'{"text": "the film"}\n', "bad.jsonl:1: expected a string or a record with a 'prompt' string"),
])
def test_a_malformed_prompt_file_is_named_with_its_line(tmp_path, cli_error, content, message):
    (tmp_path / "bad.jsonl").write_bytes(content)
    error = cli_error("train", *QUICK, "--prompts", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "runs"))
    assert message in error and str(tmp_path / "bad.jsonl") in error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no empty run left


def test_a_non_utf8_prompt_file_names_the_line_and_the_fix(tmp_path, cli_error):
    (tmp_path / "latin1.txt").write_bytes("the film\nle caf\xe9\n".encode("latin-1"))
    assert "line 2 is not UTF-8 text (byte 15); save the file as UTF-8" in cli_error(
        "train", *QUICK, "--prompts", str(tmp_path / "latin1.txt"), "--out", str(tmp_path))


@pytest.mark.parametrize("yaml_text, message", [
    ('steps: "a lot"\n', "steps='a lot' (str): steps takes int or null; in YAML write it without quotes"),
    ('n_envs: "8"\n', "n_envs='8' (str): n_envs takes int; in YAML write it without quotes, e.g. n_envs: 8"),
    ("lora: 8\n", "lora=8 (int): lora takes dict or null"),
    ("seed: yes\n", "seed=True (bool): seed takes int"),
    ("steps: [\n", "is not valid YAML"),
    ("- steps\n", "holds a list; it must map field names to values"),
])
def test_config_values_are_type_checked_against_the_fields(tmp_path, cli_error, yaml_text, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    assert message in cli_error("train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path))


def test_config_types_accept_what_yaml_writes():
    config = TrainConfig.from_dict({"learning_rate": 1, "kl_coef": 0, "lora": {"r": 4}, "reward_kwargs": {}})
    assert config.learning_rate == 1 and config.kl_coef == 0
    with pytest.raises(ConfigTypeError, match="n_steps=64.0 \\(float\\): n_steps takes int or null"):
        TrainConfig(n_steps=64.0)


@pytest.mark.parametrize("flags, message", [
    (["--learning-rate", "-1"], "learning_rate=-1.0: it must be positive"),
    (["--batch-size", "0"], "batch_size=0: it must be positive"),
    (["--steps", "-5"], "steps=-5: it must be positive"),
    (["--n-envs", "0"], "n_envs=0: it must be positive"),
    (["--kl-coef", "-0.1"], "kl_coef=-0.1: it must be 0 or more"),
    (["--eval-samples", "-1"], "eval_samples=-1: it must be 0 or more"),
    (["--eval-fraction", "1.5", "--prompts", "PROMPTS"], "eval_fraction=1.5: hold out a fraction between 0 and 1"),
    (["--device", "gpu"], "device='gpu': use auto, cpu, cuda or cuda:N"),
    (["--model", "/no/such/path"], "model='/no/such/path': no such directory. Give a directory written by "
                                   "save_pretrained"),
    (["--config", "/no/such.yaml"], "config='/no/such.yaml': no such file"),
])
def test_bad_values_are_refused_before_anything_runs(tmp_path, cli_error, flags, message):
    (tmp_path / "prompts.txt").write_text("the film\nthe plot\n")
    flags = [str(tmp_path / "prompts.txt") if flag == "PROMPTS" else flag for flag in flags]
    assert message in cli_error("train", *QUICK, *flags, "--out", str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cuda_without_a_gpu_is_refused_not_silently_cpu(cli_error, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    assert "device='cuda': torch finds no CUDA GPU on this machine; use --device cpu" in cli_error(
        "train", *QUICK, "--device", "cuda", "--out", str(tmp_path))


def test_evaluate_and_compare_errors_are_one_line_too(tmp_path, cli_error):
    assert "is not an lm-gym run directory (no config.yaml)" in cli_error("evaluate", str(tmp_path / "nothing-here"))
    assert "give --suite or --env, not both" in cli_error("compare", "--suite", "--env", "TextGen-v0")
