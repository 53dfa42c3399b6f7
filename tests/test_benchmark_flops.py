"""The benchmarks' useful-FLOP count and MFU (benchmarks/common.py) on hand-computed cases.

The benchmarks are scripts, not a package: common.py is loaded from its path."""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForTokenClassification

COMMON = Path(__file__).resolve().parent.parent / "benchmarks" / "common.py"
spec = importlib.util.spec_from_file_location("benchmark_common", COMMON)
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, num_labels=3)


def test_non_embedding_parameters_counts_layers_and_head_not_embeddings():
    model = BertForTokenClassification(tiny_config())  # no pooler
    h, i = 32, 37
    per_layer = (4 * (h * h + h)  # query, key, value, attention output: weight + bias
                 + 2 * h           # attention LayerNorm
                 + h * i + i       # intermediate
                 + i * h + h       # output
                 + 2 * h)          # output LayerNorm
    assert per_layer == 6789
    expected = 2 * per_layer + 2 * h + (h * 3 + 3)  # 2 layers, embedding LayerNorm, classifier (3 labels)
    assert expected == 13741
    assert common.non_embedding_parameters(model) == expected
    # the embedding matrices (100 + 64 + 2 rows of 32) are all that is left out
    assert sum(p.numel() for p in model.parameters()) == expected + (100 + 64 + 2) * 32
    assert common.model_flop_inputs(model, model.config) == {"nonembedding_params": 13741, "num_layers": 2,
                                                             "hidden_size": 32}


def test_training_flops_two_sequences_of_known_length():
    # two sequences of real lengths 5 and 3: 8 tokens, squared lengths 25 + 9 = 34
    lengths = [5, 3]
    tokens, squares = sum(lengths), sum(n * n for n in lengths)
    assert (tokens, squares) == (8, 34)
    # 6 x 13741 x 8 = 659,568 (parameters) + 12 x 2 layers x 32 hidden x 34 = 26,112 (attention)
    assert common.training_flops(13741, 2, 32, tokens, squares) == 659_568 + 26_112 == 685_680


def test_attention_term_uses_each_length_not_the_mean():
    # same 8 tokens as two sequences of 4: 16 + 16 = 32 squared, not 34
    assert common.training_flops(0, 2, 32, 8, 34) - common.training_flops(0, 2, 32, 8, 32) == 12 * 2 * 32 * 2


def test_mfu_divides_useful_flops_per_second_by_the_peak():
    # 685,680 FLOPs in 0.5 s = 1,371,360 FLOP/s; a 0.01 GFLOP/s (10,000,000 FLOP/s) peak -> 13.7136%
    assert common.mfu(685_680, 0.5, 0.01) == pytest.approx(0.137136)
    result = common.add_flops({"nonembedding_params": 13741, "num_layers": 2, "hidden_size": 32, "nonpad_tokens": 8,
                               "sum_sq_lengths": 34, "train_s": 0.5}, peak_gflops=0.01)
    assert result["useful_flops"] == 685_680
    assert result["useful_gflop_s"] == pytest.approx(0.00137136)
    assert result["mfu"] == pytest.approx(0.137136)


def test_token_counter_sums_real_lengths_and_their_squares():
    def collator(features):  # pads to the longest, as the transformers collators do
        width = max(len(f) for f in features)
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in features])
        return {"input_ids": mask.clone(), "attention_mask": mask}

    counter = common.TokenCounter(collator)
    counter([[7] * 5, [7] * 3])
    counter([[7] * 2])
    assert (counter.nonpad, counter.padded, counter.squares) == (10, 12, 25 + 9 + 4)
    counter.counting = False
    counter([[7] * 9])
    assert (counter.nonpad, counter.padded, counter.squares) == (10, 12, 38)


def test_token_counter_counts_each_choice_of_a_multiple_choice_batch():
    mask = torch.tensor([[[1, 1, 1, 0], [1, 1, 0, 0]], [[1, 1, 1, 1], [1, 0, 0, 0]]])  # 2 questions x 2 choices
    counter = common.TokenCounter(lambda features: {"input_ids": mask, "attention_mask": mask})
    counter(None)
    assert (counter.nonpad, counter.padded, counter.squares) == (10, 16, 9 + 4 + 16 + 1)


def test_sequence_lengths_of_plain_and_multiple_choice_features():
    assert common.sequence_lengths([[1, 2, 3], [1]]) == [3, 1]
    assert common.sequence_lengths([[[1, 2], [1, 2, 3]], [[1]]]) == [2, 3, 1]


def test_matmul_peak_is_measured_at_the_given_threads_and_restores_them():
    before = torch.get_num_threads()
    peak = common.matmul_peak_gflops(torch.float32, threads=1, size=64, warmup=1, repeats=2)
    assert peak > 0
    assert torch.get_num_threads() == before


def test_benchmark_precision_and_dropout_masks_reach_finetune_kit_train_options():
    import argparse

    import typer

    from finetune_kit.cli import app

    parser = argparse.ArgumentParser()
    common.add_precision_argument(parser)
    args = vars(parser.parse_args(["--mixed-precision", "bf16", "--dropout-masks", "fast"]))
    options = common.step_arguments(args)
    assert options == ["--mixed-precision", "bf16", "--dropout-masks", "fast"]
    train_options = {opt for param in typer.main.get_command(app).commands["train"].params for opt in param.opts}
    assert {options[0], options[2]} <= train_options
    assert common.step_label(args) == "precision bf16, finetune-kit dropout masks fast"
    defaults = vars(parser.parse_args([]))  # finetune-kit's own default masks: the option is left out
    assert common.step_arguments(defaults) == ["--mixed-precision", "no"]
    assert common.step_label(defaults) == "precision fp32, finetune-kit dropout masks default"


def test_linear_products_times_the_linear_layers_of_one_bert_layer_with_their_training_flops():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "linear_products.py"
    spec = importlib.util.spec_from_file_location("benchmark_linear_products", path)
    linear_products = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(linear_products)
    layer = BertForTokenClassification(tiny_config()).bert.encoder.layer[0]
    linears = sorted((m.in_features, m.out_features) for m in layer.modules() if isinstance(m, torch.nn.Linear))
    shapes = linear_products.layer_shapes(32, 37)
    assert sorted(shapes) == linears == sorted([(32, 32)] * 4 + [(32, 37), (37, 32)])
    # forward 2 x tokens x in x out, backward twice that: 6 x 10 x (4 x 32 x 32 + 2 x 32 x 37)
    assert linear_products.layer_training_flops(10, shapes) == 6 * 10 * (4 * 1024 + 2 * 1184) == 387840
