"""A catalog of malformed inputs to every command and task, and a runner that says what each does.

Every case builds its inputs in a folder of its own (files, model folders; the few trained
models it needs are trained once per catalog run and shared), runs one command in-process
through typer's CliRunner, or one Python API call, and comes out as one of:

- ``one-line error``: exit status 2 and standard error exactly one line, starting with
  ``error:``, that names what the case says it must (a file name, ``line N``, an option);
  through the API: an error class the CLI reports (``cli._user_errors``) with a one-line message;
- ``wrong/unclear error``: refused, but naming the wrong thing, or in several lines;
- ``traceback``: an exception escaped;
- ``silent``: the bad input was accepted (exit status 0);
- ``accepted with a note``: accepted with a note naming what the case says, for input that is
  worth a word but is no error;

and, as a separate flag, whether it *wrote files*: changed a path it must leave as it found it
(the output, the model folder, a marker file that remote code would write).

Warnings are recorded, not printed, so that a case's standard error does not depend on the cases
run before it (Python shows a warning once per place); a note may be a warning.

``python -m tests.bad_inputs`` runs the catalog and prints a Markdown table and the counts per
outcome; tests/test_bad_inputs.py checks that every case reaches its expected outcome.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import NEGATIVE, POSITIVE, build_tiny_encoder, write_csv, write_jsonl

ONE_LINE_ERROR = "one-line error"
WRONG_ERROR = "wrong/unclear error"
TRACEBACK = "traceback"
SILENT = "silent"
ACCEPTED_WITH_NOTE = "accepted with a note"
NOT_BUILT = "case could not be built"
OUTCOMES = (ONE_LINE_ERROR, WRONG_ERROR, TRACEBACK, SILENT, ACCEPTED_WITH_NOTE, NOT_BUILT)

MESSAGE_WIDTH = 120
POSITIONS = 256  # max_position_embeddings of the tiny encoder

# -- good data, shared by the cases -------------------------------------------------------------

ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
TEXTS = POSITIVE + NEGATIVE
CSV_ROWS = "".join(f"{row['text']},{row['label']}\n" for row in ROWS)  # the lines of ROWS in a CSV file
# BIOES tags; every tag of IOB2_SENTENCES is among them, so only the scheme differs.
BIOES_SENTENCES = [
    ("the old man saw the dog", "O B-PER E-PER O O S-ANI"),
    ("the old man smith sat", "O B-PER I-PER E-PER O"),
    ("a woman and her big old dog", "O S-PER O O B-ANI I-ANI E-ANI"),
    ("he saw the cat", "O O O S-ANI"),
]
IOB2_SENTENCES = [
    ("the old man saw the dog", "O B-PER I-PER O O B-ANI"),
    ("a woman and her big dog", "O B-PER O O B-ANI I-ANI"),
    ("he saw the cat", "O O O B-ANI"),
]
SPAN_ROWS = [
    {"tokens": "the old man saw the dog".split(),
     "spans": [{"start": 1, "end": 3, "label": "PER"}, {"start": 5, "end": 6, "label": "ANI"}]},
    {"tokens": "a woman and her cat".split(),
     "spans": [{"start": 1, "end": 2, "label": "PER"}, {"start": 4, "end": 5, "label": "ANI"}]},
    {"tokens": "the big dog ran".split(), "spans": [{"start": 1, "end": 3, "label": "ANI"}]},
    {"tokens": "he saw the man".split(), "spans": [{"start": 3, "end": 4, "label": "PER"}]},
]
CONTEXT = "the cat sat on the mat"
QUESTIONS = [
    {"id": "q1", "question": "where did the cat sit",
     "answers": [{"text": "the mat", "answer_start": CONTEXT.index("the mat")}]},
    {"id": "q2", "question": "who sat on the mat", "answers": [{"text": "the cat", "answer_start": 0}]},
]
# Options every training case runs with: one quick epoch, no plots, no bootstrap.
QUICK_RUN = ("--epochs", "1", "--batch-size", "8", "--no-report-plots", "--bootstrap-resamples", "0")
ONE_STEP = ("--max-steps", "1")
TASK_LENGTHS = {"question-answering": "64", "masked-lm": "32"}  # QA's default, 384, is more than POSITIONS

# Code a model folder may ship (config.json ``auto_map``); it writes a marker file when imported.
REMOTE_CODE = '''from pathlib import Path

from transformers import BertConfig, BertModel

Path({marker!r}).write_text("remote code ran\\n")


class RemoteBertConfig(BertConfig):
    model_type = "remote-bert"


class RemoteBertModel(BertModel):
    config_class = RemoteBertConfig
'''


def conll(sentences: list[tuple[str, str]]) -> str:
    """CoNLL columns (word, tag), a blank line between sentences."""
    return "\n".join("".join(f"{w}\t{t}\n" for w, t in zip(text.split(), tags.split())) for text, tags in sentences)


def squad(questions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": "v2.0", "data": [{"title": "cats", "paragraphs": [{"context": CONTEXT, "qas": questions}]}]}


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def garbage(path: Path) -> Path:
    """Random bytes of a fixed seed, which are not UTF-8."""
    path.write_bytes(random.Random(0).randbytes(600))
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def folder(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    for name, text in (files or {}).items():
        (path / name).write_text(text, encoding="utf-8")
    return path


def copy_folder(source: str | Path, target: Path) -> Path:
    """A copy of a model folder, its checkpoints left out, for a case that damages it."""
    return Path(shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints")))


def ask_for_remote_code(model_dir: Path, marker: Path) -> None:
    """Make ``model_dir``'s config need the code shipped beside it, code that writes ``marker``."""
    (model_dir / "remote_bert.py").write_text(REMOTE_CODE.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="remote-bert", auto_map={"AutoConfig": "remote_bert.RemoteBertConfig",
                                                      "AutoModel": "remote_bert.RemoteBertModel"})
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")


def line_of(text: str, part: str) -> int:
    return text[: text.index(part)].count("\n") + 1


# -- the shared workspace: encoder, good files, trained models -----------------------------------

class Workspace:
    """What the cases share: the tiny encoder, good data files of every task, and the models of
    each task trained on them (each trained once, when a case first asks for it)."""

    def __init__(self, root: Path, encoder: str | Path | None = None) -> None:
        self.root = root
        self.encoder = str(encoder) if encoder is not None else str(build_tiny_encoder(root / "tiny-bert"))
        self._models: dict[str, Path] = {}

    @cached_property
    def data(self) -> Path:
        directory = folder(self.root / "data")
        write_csv(directory / "train.csv", ROWS)
        write_csv(directory / "validation.csv", ROWS)
        write_text(directory / "bioes.conll", conll(BIOES_SENTENCES * 2))
        write_text(directory / "iob2.conll", conll(IOB2_SENTENCES))
        write_jsonl(directory / "spans.jsonl", SPAN_ROWS * 2)
        write_text(directory / "squad.json", json.dumps(squad(QUESTIONS)))
        write_text(directory / "texts.txt", "\n".join(TEXTS) + "\n")
        return directory

    def train_file(self, task: str) -> Path:
        return self.data / {"text-classification": "train.csv", "token-classification": "bioes.conll",
                            "span-ner": "spans.jsonl", "question-answering": "squad.json",
                            "masked-lm": "texts.txt"}[task]

    def model(self, task: str) -> Path:
        """A model of ``task`` trained for one quick epoch on the good data."""
        if task not in self._models:
            import finetune_kit as fk

            output = self.root / "models" / task
            validation = {"validation_file": str(self.data / "validation.csv")} if task == "text-classification" else {}
            length = {"max_length": int(TASK_LENGTHS[task])} if task in TASK_LENGTHS else {}
            fk.train(task=task, model=self.encoder, train_file=str(self.train_file(task)), output_dir=str(output),
                     epochs=1, batch_size=8, report_plots=False, bootstrap_resamples=0, **validation, **length)
            self._models[task] = output
        return self._models[task]


# -- cases ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """What a case runs (CLI arguments, or an API call and how to show it) and the paths that
    must be as they were after it."""

    args: tuple[str, ...] = ()
    call: Callable[[], Any] | None = None
    call_shape: str = ""
    watched: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    build: Callable[[Workspace, Path], Setup]
    names: tuple[str, ...] = ()  # what the message (or the note) must name
    expected: str = ONE_LINE_ERROR


CASES: list[Case] = []


def case(case_id: str, description: str, names: tuple[str, ...] | list[str] = (),
         expected: str = ONE_LINE_ERROR) -> Callable[[Callable[[Workspace, Path], Setup]], Any]:
    def register(build: Callable[[Workspace, Path], Setup]) -> Callable[[Workspace, Path], Setup]:
        CASES.append(Case(case_id, description, build, tuple(names), expected))
        return build
    return register


def train(ws: Workspace, here: Path, *extra: str, task: str = "text-classification", train_file: Path | None = None,
          model: str | Path | None = None, output: Path | None = None, one_step: bool = True) -> Setup:
    """``finetune-kit train`` of a quick run into ``here/out`` (or ``output``), which it watches."""
    output = output or here / "out"
    args = ["train", "--task", task, "--model", str(model or ws.encoder),
            "--train", str(train_file or ws.train_file(task)), "--output", str(output), *QUICK_RUN]
    if one_step:
        args += ONE_STEP
    if task in TASK_LENGTHS and "--max-length" not in extra:
        args += ["--max-length", TASK_LENGTHS[task]]
    return Setup(args=(*args, *extra), watched=(output,))


def predict(model_dir: Path, input_file: Path, output: Path, *extra: str) -> Setup:
    return Setup(args=("predict", str(model_dir), "--input", str(input_file), "--output", str(output), *extra),
                 watched=(model_dir, output))


def evaluate(model_dir: Path, data: Path, *extra: str) -> Setup:
    """``finetune-kit evaluate`` into its default report folder, inside the (watched) model folder."""
    return Setup(args=("evaluate", str(model_dir), "--data", str(data), "--no-plots", "--bootstrap-resamples", "0",
                       *extra), watched=(model_dir,))


def embed(model: str | Path, input_file: Path, output: Path, *extra: str) -> Setup:
    return Setup(args=("embed", str(model), "--input", str(input_file), "--output", str(output), "--no-progress",
                       *extra), watched=(output,))


def api(call: Callable[[], Any], shape: str, *watched: Path) -> Setup:
    return Setup(call=call, call_shape=shape, watched=watched)


def bad_csv(here: Path, name: str, bad_row: dict[str, Any]) -> Path:
    """The good rows with ``bad_row`` second, on line 3."""
    return write_csv(here / name, [ROWS[0], bad_row, *ROWS[1:]])


def span_file(here: Path, name: str, bad_spans: list[Any]) -> Path:
    """Span NER rows with ``bad_spans`` on line 2, a three-word sentence."""
    return write_jsonl(here / name, [SPAN_ROWS[0], {"tokens": ["the", "cat", "sat"], "spans": bad_spans},
                                     *SPAN_ROWS[1:]])


def squad_file(here: Path, name: str, bad_question: dict[str, Any]) -> Path:
    return write_text(here / name, json.dumps(squad([*QUESTIONS, bad_question])))


def card(ws: Workspace, here: Path, extra_line: str, **changes: Any) -> Setup:
    """A YAML card of a good quick run with ``changes`` (None drops a key) and one raw line added."""
    values = {"task": "text-classification", "model": ws.encoder, "train_file": str(ws.data / "train.csv"),
              "output_dir": str(here / "out"), "epochs": 1, "batch_size": 8, "max_steps": 1,
              "report_plots": False, "bootstrap_resamples": 0, **changes}
    text = yaml.safe_dump({k: v for k, v in values.items() if v is not None}) + extra_line
    return Setup(args=("train", str(write_text(here / "card.yaml", text))), watched=(here / "out",))


LATIN1_LINE = "caf\xe9 good movie"  # the byte 0xe9 is not UTF-8


# files: training data ------------------------------------------------------------------------------

@case("train-missing-file", "train: --train names a file that is not there", ["missing.csv"])
def train_missing_file(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, train_file=here / "missing.csv")


@case("train-empty-file", "train: an empty CSV file", ["empty.csv"])
def train_empty_file(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, train_file=write_text(here / "empty.csv", ""))


@case("train-header-only", "train: a CSV file with the header and no rows", ["header-only.csv"])
def train_header_only(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, train_file=write_text(here / "header-only.csv", "text,label\n"))


@case("train-wrong-text-column", "train: --text-column names a column the file lacks", ["train.csv", "sentence"])
def train_wrong_text_column(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--text-column", "sentence")


@case("train-unknown-label-in-validation", "train: a validation label never seen in training (line 3); "
      "the fresh --output must not appear", ["bad-validation.csv", "line 3"])
def train_unknown_validation_label(ws: Workspace, here: Path) -> Setup:
    validation = bad_csv(here, "bad-validation.csv", {"text": "so so film", "label": "meh"})
    return train(ws, here, "--validation", str(validation))


@case("train-failed-run-keeps-output", "train: bad validation data into an existing --output holding one "
      "file; the folder must stay as it was", ["bad-validation.csv", "line 3"])
def train_failed_run_keeps_output(ws: Workspace, here: Path) -> Setup:
    validation = bad_csv(here, "bad-validation.csv", {"text": "so so film", "label": "meh"})
    output = folder(here / "existing", {"notes.txt": "keep me\n"})
    return train(ws, here, "--validation", str(validation), output=output)


@case("train-ragged-csv-row", "train: a CSV row with three fields under a two-column header (line 3)",
      ["ragged.csv", "line 3"])
def train_ragged_csv_row(ws: Workspace, here: Path) -> Setup:
    text = f"text,label\ngood movie,pos\nbad, movie,neg\n{CSV_ROWS}"
    return train(ws, here, train_file=write_text(here / "ragged.csv", text))


@case("train-csv-unclosed-quote", "train: a CSV field whose quote opens on line 3 and never closes",
      ["unclosed-quote.csv", "line 3"])
def train_csv_unclosed_quote(ws: Workspace, here: Path) -> Setup:
    text = f'text,label\ngood movie,pos\n"bad movie,neg\n{CSV_ROWS}'
    return train(ws, here, train_file=write_text(here / "unclosed-quote.csv", text))


@case("train-unknown-label-after-multiline-field", "train: validation label never seen in training on line 4, "
      "after a quoted field that spans lines 2 and 3", ["multiline.csv", "line 4"])
def train_unknown_label_after_multiline_field(ws: Workspace, here: Path) -> Setup:
    validation = write_text(here / "multiline.csv", 'text,label\n"good\nmovie",pos\nso so film,meh\nbad movie,neg\n')
    return train(ws, here, "--validation", str(validation))


@case("train-malformed-jsonl-line", "train: a JSON Lines line that is not JSON (line 2)",
      ["malformed.jsonl", "line 2"])
def train_malformed_jsonl_line(ws: Workspace, here: Path) -> Setup:
    lines = [json.dumps(ROWS[0]), '{"text": "bad movie", "label": ', *map(json.dumps, ROWS[1:])]
    return train(ws, here, train_file=write_text(here / "malformed.jsonl", "\n".join(lines) + "\n"))


@case("train-jsonl-line-is-array", "train: a JSON Lines line holding an array, not an object (line 2)",
      ["array.jsonl", "line 2"])
def train_jsonl_line_is_array(ws: Workspace, here: Path) -> Setup:
    lines = [json.dumps(ROWS[0]), '["bad movie", "neg"]', *map(json.dumps, ROWS[1:])]
    return train(ws, here, train_file=write_text(here / "array.jsonl", "\n".join(lines) + "\n"))


@case("train-jsonl-mixed-kinds", "train: a JSON Lines column holding text, then a number (line 3)",
      ["mixed.jsonl", "line 3"])
def train_jsonl_mixed_kinds(ws: Workspace, here: Path) -> Setup:
    rows = [ROWS[0], ROWS[1], {"text": 5, "label": "pos"}, *ROWS[2:]]
    return train(ws, here, train_file=write_jsonl(here / "mixed.jsonl", rows))


@case("train-conll-token-without-tag", "train token-classification: a CoNLL token line without its tag (line 3)",
      ["no-tag.conll", "line 3"])
def train_conll_token_without_tag(ws: Workspace, here: Path) -> Setup:
    text = "the\tO\nold\tB-PER\nman\nsaw\tO\n\n" + conll(BIOES_SENTENCES)
    return train(ws, here, task="token-classification", train_file=write_text(here / "no-tag.conll", text))


@case("train-conll-column-counts", "train token-classification: a CoNLL line with three columns among lines "
      "of two (line 2)", ["columns.conll", "line 2"])
def train_conll_column_counts(ws: Workspace, here: Path) -> Setup:
    text = "the\tO\nold\tJJ\tB-PER\nman\tE-PER\n\n" + conll(BIOES_SENTENCES)
    return train(ws, here, task="token-classification", train_file=write_text(here / "columns.conll", text))


@case("train-latin1-csv", "train: a Latin-1 CSV file (byte 0xe9 on line 3)", ["latin1.csv", "line 3"])
def train_latin1_csv(ws: Workspace, here: Path) -> Setup:
    text = f"text,label\ngood movie,pos\n{LATIN1_LINE},pos\n{CSV_ROWS}"
    return train(ws, here, train_file=write_text(here / "latin1.csv", text, "latin-1"))


@case("train-latin1-jsonl", "train: a Latin-1 JSON Lines file (line 2)", ["latin1.jsonl", "line 2"])
def train_latin1_jsonl(ws: Workspace, here: Path) -> Setup:
    lines = [json.dumps(ROWS[0]), json.dumps({"text": LATIN1_LINE, "label": "pos"}, ensure_ascii=False),
             *map(json.dumps, ROWS[1:])]
    return train(ws, here, train_file=write_text(here / "latin1.jsonl", "\n".join(lines) + "\n", "latin-1"))


@case("train-latin1-conll", "train token-classification: a Latin-1 CoNLL file (line 2)", ["latin1.conll", "line 2"])
def train_latin1_conll(ws: Workspace, here: Path) -> Setup:
    text = "the\tO\ncaf\xe9\tS-ANI\n\n" + conll(BIOES_SENTENCES)
    return train(ws, here, task="token-classification", train_file=write_text(here / "latin1.conll", text, "latin-1"))


@case("train-latin1-text", "train masked-lm: a Latin-1 plain text file (line 2)", ["latin1.txt", "line 2"])
def train_latin1_text(ws: Workspace, here: Path) -> Setup:
    text = "\n".join([TEXTS[0], LATIN1_LINE, *TEXTS[1:]]) + "\n"
    return train(ws, here, task="masked-lm", train_file=write_text(here / "latin1.txt", text, "latin-1"))


LATIN1_SQUAD_LINE = 8  # the line of the context in json.dumps(..., indent=1) of the document below


def latin1_squad(here: Path) -> Path:
    document = {"version": "v2.0", "data": [{"title": "cafe", "paragraphs": [
        {"context": "the caf\xe9 is on the mat", "qas": [{"id": "q1", "question": "where is it",
                                                        "answers": [{"text": "the mat", "answer_start": 15}]}]}]}]}
    text = json.dumps(document, indent=1, ensure_ascii=False)
    assert line_of(text, "caf\xe9") == LATIN1_SQUAD_LINE, "the case's expected line is out of date"
    return write_text(here / "latin1.json", text, "latin-1")


@case("train-latin1-squad", "train question-answering: a Latin-1 SQuAD JSON file",
      ["latin1.json", f"line {LATIN1_SQUAD_LINE}"])
def train_latin1_squad(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, task="question-answering", train_file=latin1_squad(here))


@case("train-binary-garbage", "train: a .csv file of random bytes", ["garbage.csv"])
def train_binary_garbage(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, train_file=garbage(here / "garbage.csv"))


@case("train-pair-missing-second-text", "train pair-classification: the file has no text_pair column",
      ["pairs.csv", "text_pair"])
def train_pair_missing_second_text(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, task="pair-classification", train_file=write_csv(here / "pairs.csv", ROWS))


# files: predict and embed inputs ----------------------------------------------------------------

@case("predict-missing-input", "predict: --input names a file that is not there", ["missing.csv"])
def predict_missing_input(ws: Workspace, here: Path) -> Setup:
    return predict(ws.model("text-classification"), here / "missing.csv", here / "p.jsonl")


@case("predict-empty-input", "predict: an empty input file", ["empty.csv"])
def predict_empty_input(ws: Workspace, here: Path) -> Setup:
    return predict(ws.model("text-classification"), write_text(here / "empty.csv", ""), here / "p.jsonl")


@case("predict-latin1-csv", "predict: a Latin-1 CSV input (line 3)", ["latin1.csv", "line 3"])
def predict_latin1_csv(ws: Workspace, here: Path) -> Setup:
    source = write_text(here / "latin1.csv", f"text\ngood movie\n{LATIN1_LINE}\n", "latin-1")
    return predict(ws.model("text-classification"), source, here / "p.jsonl")


@case("predict-garbage-jsonl", "predict: a .jsonl input of random bytes", ["garbage.jsonl"])
def predict_garbage_jsonl(ws: Workspace, here: Path) -> Setup:
    return predict(ws.model("text-classification"), garbage(here / "garbage.jsonl"), here / "p.jsonl")


@case("predict-malformed-jsonl", "predict: a JSON Lines input with a line that is not JSON (line 2)",
      ["malformed.jsonl", "line 2"])
def predict_malformed_jsonl(ws: Workspace, here: Path) -> Setup:
    source = write_text(here / "malformed.jsonl", '{"text": "good movie"}\n{"text": "bad\n')
    return predict(ws.model("text-classification"), source, here / "p.jsonl")


@case("predict-wrong-text-column", "predict: --text-column names a column the input lacks", ["in.csv", "sentence"])
def predict_wrong_text_column(ws: Workspace, here: Path) -> Setup:
    source = write_csv(here / "in.csv", [{"text": t} for t in TEXTS[:3]])
    return predict(ws.model("text-classification"), source, here / "p.jsonl", "--text-column", "sentence")


@case("predict-latin1-conll", "predict token-classification: a Latin-1 CoNLL input (line 2)",
      ["latin1.conll", "line 2"])
def predict_latin1_conll(ws: Workspace, here: Path) -> Setup:
    source = write_text(here / "latin1.conll", "the\ncaf\xe9\nsat\n", "latin-1")
    return predict(ws.model("token-classification"), source, here / "p.jsonl")


@case("predict-latin1-spans", "predict span-ner: a Latin-1 JSON Lines input (line 2)", ["latin1.jsonl", "line 2"])
def predict_latin1_spans(ws: Workspace, here: Path) -> Setup:
    text = '{"tokens": ["the", "dog"]}\n{"tokens": ["the", "caf\xe9"]}\n'
    return predict(ws.model("span-ner"), write_text(here / "latin1.jsonl", text, "latin-1"), here / "p.jsonl")


@case("predict-latin1-squad", "predict question-answering: a Latin-1 SQuAD JSON input",
      ["latin1.json", f"line {LATIN1_SQUAD_LINE}"])
def predict_latin1_squad(ws: Workspace, here: Path) -> Setup:
    return predict(ws.model("question-answering"), latin1_squad(here), here / "p.json")


@case("predict-latin1-text", "predict masked-lm: a Latin-1 plain text input (line 2)", ["latin1.txt", "line 2"])
def predict_latin1_text(ws: Workspace, here: Path) -> Setup:
    source = write_text(here / "latin1.txt", f"a [MASK] movie\n{LATIN1_LINE}\n", "latin-1")
    return predict(ws.model("masked-lm"), source, here / "p.jsonl")


@case("embed-missing-input", "embed: --input names a file that is not there", ["missing.txt"])
def embed_missing_input(ws: Workspace, here: Path) -> Setup:
    return embed(ws.encoder, here / "missing.txt", here / "e.npy")


@case("embed-empty-input", "embed: an empty input file", ["empty.txt"])
def embed_empty_input(ws: Workspace, here: Path) -> Setup:
    return embed(ws.encoder, write_text(here / "empty.txt", ""), here / "e.npy")


@case("embed-latin1-text", "embed: a Latin-1 plain text input (line 2)", ["latin1.txt", "line 2"])
def embed_latin1_text(ws: Workspace, here: Path) -> Setup:
    return embed(ws.encoder, write_text(here / "latin1.txt", f"good movie\n{LATIN1_LINE}\n", "latin-1"), here / "e.npy")


@case("embed-latin1-jsonl", "embed: a Latin-1 JSON Lines input (line 2)", ["latin1.jsonl", "line 2"])
def embed_latin1_jsonl(ws: Workspace, here: Path) -> Setup:
    source = write_text(here / "latin1.jsonl", f'{{"text": "good movie"}}\n{{"text": "{LATIN1_LINE}"}}\n', "latin-1")
    return embed(ws.encoder, source, here / "e.npy")


@case("embed-garbage-jsonl", "embed: a .jsonl input of random bytes", ["garbage.jsonl"])
def embed_garbage_jsonl(ws: Workspace, here: Path) -> Setup:
    return embed(ws.encoder, garbage(here / "garbage.jsonl"), here / "e.npy")


@case("embed-from-model-latin1-text", "embed with a finetune-kit model folder: a Latin-1 text input (line 2)",
      ["latin1.txt", "line 2"])
def embed_from_model_latin1_text(ws: Workspace, here: Path) -> Setup:
    source = write_text(here / "latin1.txt", f"good movie\n{LATIN1_LINE}\n", "latin-1")
    return embed(ws.model("text-classification"), source, here / "e.npy")


# task data ----------------------------------------------------------------------------------------

@case("span-ner-span-off-sentence", "train span-ner: a span ending past its three-word sentence (line 2)",
      ["off-sentence.jsonl", "line 2"])
def span_off_sentence(ws: Workspace, here: Path) -> Setup:
    source = span_file(here, "off-sentence.jsonl", [{"start": 1, "end": 9, "label": "ANI"}])
    return train(ws, here, task="span-ner", train_file=source)


@case("span-ner-end-before-start", "train span-ner: a span whose end comes before its start (line 2)",
      ["end-before-start.jsonl", "line 2"])
def span_end_before_start(ws: Workspace, here: Path) -> Setup:
    source = span_file(here, "end-before-start.jsonl", [{"start": 2, "end": 1, "label": "ANI"}])
    return train(ws, here, task="span-ner", train_file=source)


@case("span-ner-start-as-string", 'train span-ner: a span start given as the string "0" (line 2)',
      ["string-start.jsonl", "line 2"])
def span_start_as_string(ws: Workspace, here: Path) -> Setup:
    source = span_file(here, "string-start.jsonl", [{"start": "0", "end": 1, "label": "ANI"}])
    return train(ws, here, task="span-ner", train_file=source)


@case("span-ner-span-as-list", 'train span-ner: a span written as a list [0, 1, "ANI"], not an object (line 2)',
      ["list-span.jsonl", "line 2"])
def span_as_list(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, task="span-ner", train_file=span_file(here, "list-span.jsonl", [[0, 1, "ANI"]]))


@case("span-ner-duplicate-gold-span", "train span-ner: the same gold span twice in a sentence (line 2); "
      "counted once, with a note naming the file", ["duplicate-spans.jsonl"], expected=ACCEPTED_WITH_NOTE)
def span_duplicate_gold(ws: Workspace, here: Path) -> Setup:
    twice = [{"start": 1, "end": 2, "label": "ANI"}, {"start": 1, "end": 2, "label": "ANI"}]
    setup = train(ws, here, task="span-ner", train_file=span_file(here, "duplicate-spans.jsonl", twice))
    return Setup(args=setup.args)  # accepted: the run writes its output


@case("evaluate-span-ner-start-as-string", 'evaluate span-ner: a span start given as the string "0" (line 2)',
      ["string-start.jsonl", "line 2"])
def evaluate_span_start_as_string(ws: Workspace, here: Path) -> Setup:
    source = span_file(here, "string-start.jsonl", [{"start": "0", "end": 1, "label": "ANI"}])
    return evaluate(ws.model("span-ner"), source)


@case("qa-answer-not-in-context", "train question-answering: an answer that is not in the context (q3)",
      ["not-in-context.json", "q3"])
def qa_answer_not_in_context(ws: Workspace, here: Path) -> Setup:
    bad = {"id": "q3", "question": "what sat", "answers": [{"text": "the dog", "answer_start": 15}]}
    return train(ws, here, task="question-answering", train_file=squad_file(here, "not-in-context.json", bad))


@case("qa-wrong-answer-start", "train question-answering: answer_start pointing elsewhere in the context (q3)",
      ["wrong-start.json", "q3"])
def qa_wrong_answer_start(ws: Workspace, here: Path) -> Setup:
    bad = {"id": "q3", "question": "where", "answers": [{"text": "the mat", "answer_start": 3}]}
    return train(ws, here, task="question-answering", train_file=squad_file(here, "wrong-start.json", bad))


IMPOSSIBLE_WITH_ANSWER = {"id": "q3", "question": "where did the dog sit", "is_impossible": True,
                          "answers": [{"text": "the mat", "answer_start": CONTEXT.index("the mat")}]}


@case("qa-impossible-with-answers", "train question-answering: is_impossible true on a question with answers (q3)",
      ["impossible.json", "q3"])
def qa_impossible_with_answers(ws: Workspace, here: Path) -> Setup:
    source = squad_file(here, "impossible.json", IMPOSSIBLE_WITH_ANSWER)
    return train(ws, here, task="question-answering", train_file=source)


@case("evaluate-qa-impossible-with-answers", "evaluate question-answering: is_impossible true on a question "
      "with answers (q3)", ["impossible.json", "q3"])
def evaluate_qa_impossible_with_answers(ws: Workspace, here: Path) -> Setup:
    return evaluate(ws.model("question-answering"), squad_file(here, "impossible.json", IMPOSSIBLE_WITH_ANSWER))


@case("tagging-stray-bioes-tag", "train token-classification: an IOB2 file with one stray E-PER tag",
      ["stray-tag.conll", "line "])
def tagging_stray_bioes_tag(ws: Workspace, here: Path) -> Setup:
    stray = ("the old man saw the dog", "O B-PER E-PER O O B-ANI")
    source = write_text(here / "stray-tag.conll", conll([*IOB2_SENTENCES * 3, stray]))
    return train(ws, here, task="token-classification", train_file=source)


@case("evaluate-iob2-with-bioes-model", "evaluate token-classification: a valid IOB2 file with a model "
      "trained on BIOES tags", ["iob2.conll", "line "])
def evaluate_iob2_with_bioes_model(ws: Workspace, here: Path) -> Setup:
    return evaluate(ws.model("token-classification"), ws.data / "iob2.conll")


@case("tagging-unknown-scheme", "train token-classification: -o scheme=xyz", ["scheme"])
def tagging_unknown_scheme(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "-o", "scheme=xyz", task="token-classification")


@case("tagging-bad-crf-value", "train token-classification: -o crf=maybe", ["crf"])
def tagging_bad_crf_value(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "-o", "crf=maybe", task="token-classification")


ZERO_WIDTH_TEXT = "\u200b\u200b\n\x01\x02\n\u200b\n\x7f\n"


@case("masked-lm-zero-width-text", "train masked-lm: every line only zero-width or control characters",
      ["zero-width.txt"])
def masked_lm_zero_width_text(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, task="masked-lm", train_file=write_text(here / "zero-width.txt", ZERO_WIDTH_TEXT))


@case("evaluate-masked-lm-zero-width-text", "evaluate masked-lm: every line only zero-width or control characters",
      ["zero-width.txt"])
def evaluate_masked_lm_zero_width_text(ws: Workspace, here: Path) -> Setup:
    return evaluate(ws.model("masked-lm"), write_text(here / "zero-width.txt", ZERO_WIDTH_TEXT))


# settings ----------------------------------------------------------------------------------------

@case("epochs-nan", "train --epochs nan", ["epochs"])
def epochs_nan(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--epochs", "nan", one_step=False)


@case("epochs-inf", "train --epochs inf", ["epochs"])
def epochs_inf(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--epochs", "inf", one_step=False)


@case("epochs-zero", "train --epochs 0", ["epochs"])
def epochs_zero(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--epochs", "0", one_step=False)


@case("learning-rate-nan", "train --learning-rate nan", ["learning_rate"])
def learning_rate_nan(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--learning-rate", "nan")


@case("learning-rate-negative", "train --learning-rate -1", ["learning_rate"])
def learning_rate_negative(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--learning-rate", "-1")


@case("max-grad-norm-negative", "train --max-grad-norm -1", ["max_grad_norm"])
def max_grad_norm_negative(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--max-grad-norm", "-1")


@case("batch-size-zero", "train --batch-size 0", ["batch_size"])
def batch_size_zero(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--batch-size", "0")


@case("max-length-over-positions", f"train --max-length 100000 with an encoder of {POSITIONS} positions",
      ["max_length", str(POSITIONS)])
def max_length_over_positions(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--max-length", "100000")


@case("validation-fraction-above-one", "train --validation-fraction 1.5", ["validation_fraction"])
def validation_fraction_above_one(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--validation-fraction", "1.5")


@case("unknown-task", "train --task no-such-task", ["no-such-task"])
def unknown_task(ws: Workspace, here: Path) -> Setup:
    setup = train(ws, here)
    args = list(setup.args)
    args[args.index("--task") + 1] = "no-such-task"
    return Setup(args=tuple(args), watched=setup.watched)


@case("unknown-task-option", "train -o colour=red (not an option of text-classification)", ["colour"])
def unknown_task_option(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "-o", "colour=red")


@case("bad-task-option-value", "train -o pooling=sideways", ["pooling"])
def bad_task_option_value(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "-o", "pooling=sideways")


@case("unexpected-argument", "train with a stray argument that is neither CONFIG.yaml nor key=value", ["nonsense"])
def unexpected_argument(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "nonsense")


@case("yaml-task-options-scalar", "train card.yaml with task_options: 5", ["task_options"])
def yaml_task_options_scalar(ws: Workspace, here: Path) -> Setup:
    return card(ws, here, "task_options: 5\n")


@case("yaml-epochs-nan", "train card.yaml with epochs: .nan", ["epochs"])
def yaml_epochs_nan(ws: Workspace, here: Path) -> Setup:
    return card(ws, here, "epochs: .nan\n", epochs=None, max_steps=None)


@case("yaml-not-a-mapping", "train card.yaml holding a list, not a mapping", ["card.yaml"])
def yaml_not_a_mapping(ws: Workspace, here: Path) -> Setup:
    return Setup(args=("train", str(write_text(here / "card.yaml", "- epochs\n- 1\n"))), watched=(here / "out",))


@case("yaml-syntax-error", "train card.yaml with a YAML syntax error (line 3)", ["card.yaml", "line 3"])
def yaml_syntax_error(ws: Workspace, here: Path) -> Setup:
    text = "task: text-classification\nepochs: 1\n  batch_size: 8\n"
    return Setup(args=("train", str(write_text(here / "card.yaml", text))), watched=(here / "out",))


@case("yaml-unknown-key", "train card.yaml with the unknown key epochz", ["epochz"])
def yaml_unknown_key(ws: Workspace, here: Path) -> Setup:
    return card(ws, here, "epochz: 2\n")


# models ------------------------------------------------------------------------------------------

@case("model-empty-folder", "train --model an empty folder", ["empty-encoder"])
def model_empty_folder(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, model=folder(here / "empty-encoder"))


@case("model-truncated-weights", "train --model an encoder whose model.safetensors is cut in half",
      ["model.safetensors"])
def model_truncated_weights(ws: Workspace, here: Path) -> Setup:
    encoder = copy_folder(ws.encoder, here / "cut-encoder")
    truncate(encoder / "model.safetensors")
    return train(ws, here, model=encoder)


@case("model-config-not-json", "train --model an encoder whose config.json is not JSON", ["config.json"])
def model_config_not_json(ws: Workspace, here: Path) -> Setup:
    encoder = copy_folder(ws.encoder, here / "broken-config-encoder")
    write_text(encoder / "config.json", '{"model_type": "bert", ')
    return train(ws, here, model=encoder)


@case("model-without-tokenizer", "train --model an encoder folder with only config.json and model.safetensors",
      ["no-tokenizer-encoder"])
def model_without_tokenizer(ws: Workspace, here: Path) -> Setup:
    encoder = folder(here / "no-tokenizer-encoder")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(ws.encoder) / name, encoder / name)
    return train(ws, here, model=encoder)


@case("model-remote-code-without-flag", "train --model a folder whose config needs its shipped code (auto_map), "
      "no --trust-remote-code; the code must not run", ["--trust-remote-code"])
def model_remote_code_without_flag(ws: Workspace, here: Path) -> Setup:
    encoder = copy_folder(ws.encoder, here / "remote-encoder")
    marker = here / "remote-code-ran"
    ask_for_remote_code(encoder, marker)
    setup = train(ws, here, model=encoder)
    return Setup(args=setup.args, watched=(*setup.watched, marker))


@case("embed-empty-model-folder", "embed with an empty folder as the model", ["empty-encoder"])
def embed_empty_model_folder(ws: Workspace, here: Path) -> Setup:
    return embed(folder(here / "empty-encoder"), write_text(here / "in.txt", "good movie\n"), here / "e.npy")


@case("embed-truncated-weights", "embed with an encoder whose model.safetensors is cut in half",
      ["model.safetensors"])
def embed_truncated_weights(ws: Workspace, here: Path) -> Setup:
    encoder = copy_folder(ws.encoder, here / "cut-encoder")
    truncate(encoder / "model.safetensors")
    return embed(encoder, write_text(here / "in.txt", "good movie\n"), here / "e.npy")


@case("predict-truncated-model", "predict with a finetune-kit model whose model.safetensors is cut in half",
      ["model.safetensors"])
def predict_truncated_model(ws: Workspace, here: Path) -> Setup:
    model = copy_folder(ws.model("text-classification"), here / "cut-model")
    truncate(model / "model.safetensors")
    return predict(model, write_csv(here / "in.csv", [{"text": "good movie"}]), here / "p.jsonl")


@case("evaluate-truncated-model", "evaluate a finetune-kit model whose model.safetensors is cut in half",
      ["model.safetensors"])
def evaluate_truncated_model(ws: Workspace, here: Path) -> Setup:
    model = copy_folder(ws.model("text-classification"), here / "cut-model")
    truncate(model / "model.safetensors")
    return evaluate(model, ws.data / "validation.csv")


@case("predict-not-a-model", "predict with a folder that holds no model", ["not-a-model"])
def predict_not_a_model(ws: Workspace, here: Path) -> Setup:
    model = folder(here / "not-a-model", {"notes.txt": "hello\n"})
    return predict(model, write_csv(here / "in.csv", [{"text": "good movie"}]), here / "p.jsonl")


@case("predict-model-trusting-itself", "predict with a finetune-kit model whose finetune_kit.json says "
      "trust_remote_code: true and which ships code; no flag given, the code must not run", ["--trust-remote-code"])
def predict_model_trusting_itself(ws: Workspace, here: Path) -> Setup:
    model = copy_folder(ws.model("text-classification"), here / "trusting-model")
    marker = here / "remote-code-ran"
    ask_for_remote_code(model, marker)
    manifest = json.loads((model / "finetune_kit.json").read_text(encoding="utf-8"))
    manifest["config"]["trust_remote_code"] = True
    (model / "finetune_kit.json").write_text(json.dumps(manifest), encoding="utf-8")
    setup = predict(model, write_csv(here / "in.csv", [{"text": "good movie"}]), here / "p.jsonl")
    return Setup(args=setup.args, watched=(*setup.watched, marker))


@case("export-not-a-model", "export a folder that holds no model", ["not-a-model"])
def export_not_a_model(ws: Workspace, here: Path) -> Setup:
    model = folder(here / "not-a-model", {"notes.txt": "hello\n"})
    return Setup(args=("export", str(model), "--output", str(here / "exported")), watched=(here / "exported",))


@case("export-over-a-model", "export into a folder that already holds a model", ["existing-model"])
def export_over_a_model(ws: Workspace, here: Path) -> Setup:
    target = copy_folder(ws.model("text-classification"), here / "existing-model")
    return Setup(args=("export", str(ws.model("text-classification")), "--output", str(target)), watched=(target,))


@case("export-encoder-into-non-empty-folder", "export --encoder into a folder that holds a file", ["non-empty"])
def export_encoder_into_non_empty_folder(ws: Workspace, here: Path) -> Setup:
    target = folder(here / "non-empty", {"notes.txt": "keep me\n"})
    return Setup(args=("export", str(ws.model("text-classification")), "--output", str(target), "--encoder"),
                 watched=(target,))


@case("compare-not-a-run", "compare a folder that holds no run", ["not-a-run"])
def compare_not_a_run(ws: Workspace, here: Path) -> Setup:
    return Setup(args=("compare", str(folder(here / "not-a-run", {"notes.txt": "hello\n"})),
                       str(ws.model("text-classification"))))


@case("compare-missing-folder", "compare a folder that is not there", ["missing-run"])
def compare_missing_folder(ws: Workspace, here: Path) -> Setup:
    return Setup(args=("compare", str(here / "missing-run"), str(ws.model("text-classification"))))


# outputs -----------------------------------------------------------------------------------------

@case("predict-output-is-directory", "predict --output naming an existing directory", ["out-dir"])
def predict_output_is_directory(ws: Workspace, here: Path) -> Setup:
    source = write_csv(here / "in.csv", [{"text": "good movie"}])
    return predict(ws.model("text-classification"), source, folder(here / "out-dir"))


@case("predict-output-parent-is-file", "predict --output whose parent is a regular file", ["plain-file"])
def predict_output_parent_is_file(ws: Workspace, here: Path) -> Setup:
    source = write_csv(here / "in.csv", [{"text": "good movie"}])
    parent = write_text(here / "plain-file", "keep me\n")
    setup = predict(ws.model("text-classification"), source, parent / "p.jsonl")
    return Setup(args=setup.args, watched=(*setup.watched, parent))


@case("train-output-is-file", "train --output naming a regular file", ["out-file"])
def train_output_is_file(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, output=write_text(here / "out-file", "keep me\n"))


@case("train-over-a-model", "train into a folder holding a model, without --overwrite", ["--overwrite"])
def train_over_a_model(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, output=copy_folder(ws.model("text-classification"), here / "existing-model"))


@case("evaluate-missing-data", "evaluate --data naming a file that is not there", ["missing.csv"])
def evaluate_missing_data(ws: Workspace, here: Path) -> Setup:
    return evaluate(ws.model("text-classification"), here / "missing.csv")


@case("evaluate-unknown-label", "evaluate: a label never seen in training (line 3)", ["unknown-label.csv", "line 3"])
def evaluate_unknown_label(ws: Workspace, here: Path) -> Setup:
    data = bad_csv(here, "unknown-label.csv", {"text": "so so film", "label": "meh"})
    return evaluate(ws.model("text-classification"), data)


@case("evaluate-negative-bootstrap", "evaluate --bootstrap-resamples -1", ["bootstrap_resamples"])
def evaluate_negative_bootstrap(ws: Workspace, here: Path) -> Setup:
    return evaluate(ws.model("text-classification"), ws.data / "validation.csv", "--bootstrap-resamples", "-1")


# resume ------------------------------------------------------------------------------------------

def finished_run(ws: Workspace, here: Path) -> tuple[Setup, Path]:
    """A quick run of two optimizer steps (16 rows, batches of 8) on its own copy of the training
    data, which leaves one checkpoint, step-2; returns its command and that training file."""
    from typer.testing import CliRunner

    from finetune_kit.cli import app

    train_file = write_csv(here / "resume-train.csv", ROWS)
    setup = train(ws, here, train_file=train_file, one_step=False)
    result = CliRunner().invoke(app, list(setup.args))
    if result.exit_code != 0 or not (here / "out" / "checkpoints" / "step-2").is_dir():
        raise RuntimeError(f"the run to resume did not finish with checkpoint step-2: {result.output[-300:]}")
    return setup, train_file


def flip_labels(train_file: Path) -> None:
    write_csv(train_file, [{**row, "label": "neg" if row["label"] == "pos" else "pos"} for row in ROWS])


@case("resume-without-checkpoint", "train --resume into a fresh --output", ["resume"])
def resume_without_checkpoint(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--resume")


@case("resume-damaged-only-checkpoint", "train --resume when the only checkpoint's model.safetensors is cut "
      "in half", ["step-2", "model.safetensors"])
def resume_damaged_only_checkpoint(ws: Workspace, here: Path) -> Setup:
    setup, _ = finished_run(ws, here)
    truncate(here / "out" / "checkpoints" / "step-2" / "model.safetensors")
    return Setup(args=(*setup.args, "--resume"), watched=setup.watched)


@case("resume-training-file-changed", "train --resume after the training file changed (labels flipped)",
      ["resume-train.csv"])
def resume_training_file_changed(ws: Workspace, here: Path) -> Setup:
    setup, train_file = finished_run(ws, here)
    flip_labels(train_file)
    return Setup(args=(*setup.args, "--resume"), watched=setup.watched)


@case("resume-anyway-training-file-changed", "train --resume --resume-anyway after the training file changed: "
      "resumed with a note naming the file", ["resume-train.csv"], expected=ACCEPTED_WITH_NOTE)
def resume_anyway_training_file_changed(ws: Workspace, here: Path) -> Setup:
    setup, train_file = finished_run(ws, here)
    flip_labels(train_file)
    return Setup(args=(*setup.args, "--resume", "--resume-anyway"))


@case("resume-from-not-a-checkpoint", "train --resume-from a folder that is not a checkpoint", ["not-a-checkpoint"])
def resume_from_not_a_checkpoint(ws: Workspace, here: Path) -> Setup:
    return train(ws, here, "--resume-from", str(folder(here / "not-a-checkpoint", {"notes.txt": "hello\n"})))


# the Python API ----------------------------------------------------------------------------------

@case("api-load-not-a-model", "fk.load on a folder that holds no model", ["not-a-model"])
def api_load_not_a_model(ws: Workspace, here: Path) -> Setup:
    import finetune_kit as fk

    model = folder(here / "not-a-model", {"notes.txt": "hello\n"})
    return api(lambda: fk.load(model), "fk.load('not-a-model')", model)


@case("api-predict-one-dict", "fk.load(text model).predict given one dict instead of a list of inputs",
      ["predict", "a list of inputs"])
def api_predict_one_dict(ws: Workspace, here: Path) -> Setup:
    import finetune_kit as fk

    model = ws.model("text-classification")
    return api(lambda: fk.load(model).predict({"text": "good movie"}),
               "fk.load(text model).predict({'text': 'good movie'})", model)


@case("api-predict-one-string", "fk.load(text model).predict given one string instead of a list of inputs",
      ["predict", "a list of inputs"])
def api_predict_one_string(ws: Workspace, here: Path) -> Setup:
    import finetune_kit as fk

    model = ws.model("text-classification")
    return api(lambda: fk.load(model).predict("excellent"), "fk.load(text model).predict('excellent')", model)


@case("api-predict-int", "fk.load(text model).predict given an int",
      ["predict", "a list of inputs"])
def api_predict_int(ws: Workspace, here: Path) -> Setup:
    import finetune_kit as fk

    model = ws.model("text-classification")
    return api(lambda: fk.load(model).predict(5), "fk.load(text model).predict(5)", model)


@case("api-train-epochs-nan", "fk.train(epochs=float('nan'))", ["epochs"])
def api_train_epochs_nan(ws: Workspace, here: Path) -> Setup:
    import finetune_kit as fk

    output = here / "out"
    return api(lambda: fk.train(task="text-classification", model=ws.encoder, train_file=str(ws.data / "train.csv"),
                                output_dir=str(output), epochs=float("nan"), batch_size=8, report_plots=False,
                                bootstrap_resamples=0),
               "fk.train(task='text-classification', ..., epochs=float('nan'))", output)


@case("api-evaluate-missing-data", "fk.evaluate with a data file that is not there", ["missing.csv"])
def api_evaluate_missing_data(ws: Workspace, here: Path) -> Setup:
    import finetune_kit as fk

    model = ws.model("text-classification")
    return api(lambda: fk.evaluate(model, here / "missing.csv", plots=False, bootstrap_resamples=0),
               "fk.evaluate(text model, 'missing.csv')", model)


# -- running and classifying ------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    case: Case
    command: str
    exit_status: str  # the CLI's exit status; "-" for an API call
    kind: str  # one of OUTCOMES
    message: str
    wrote: tuple[str, ...] = ()  # watched paths that changed
    through_api: bool = False

    @property
    def as_expected(self) -> bool:
        return self.kind == self.case.expected and not self.wrote

    def describe(self) -> str:
        wrote = f"; wrote {', '.join(self.wrote)}" if self.wrote else ""
        return (f"{self.case.id}: expected {self.case.expected} naming {list(self.case.names)}, got {self.kind} "
                f"(exit {self.exit_status}{wrote}): {self.message}")


def mentions(text: str, name: str) -> bool:
    """``name`` appears in ``text``; option names match in either spelling (--max-length,
    max_length) and "line 3" does not match "line 30"."""
    def spelling(s: str) -> str:
        return s.replace("_", "-")
    pattern = re.escape(spelling(name).lstrip("-")) + (r"(?!\d)" if name[-1:].isdigit() else "")
    return re.search(pattern, spelling(text)) is not None


def names_all(text: str, names: tuple[str, ...]) -> bool:
    return all(mentions(text, name) for name in names)


def fingerprint(path: Path) -> Any:
    """What a path holds: None when absent, a file's digest, or a folder's names and digests."""
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return tuple(sorted((str(p.relative_to(path)), fingerprint(p) if p.is_file() else "dir") for p in path.rglob("*")))


def classify_exit(case: Case, exit_code: int, exception: BaseException | None, stderr: str,
                  notes: list[str]) -> tuple[str, str]:
    """(outcome, message) of a CLI run."""
    if exception is not None and not isinstance(exception, SystemExit):
        return TRACEBACK, f"{type(exception).__name__}: {exception}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if exit_code == 0:
        return accepted(case, [*lines, *notes, "".join(stderr.splitlines())])
    message = " / ".join(lines)
    if exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and names_all(lines[0], case.names):
        return ONE_LINE_ERROR, message
    return WRONG_ERROR, message


def accepted(case: Case, lines: list[str]) -> tuple[str, str]:
    """An accepted input: with the note the case expects, or silently."""
    if case.expected == ACCEPTED_WITH_NOTE:
        for line in lines:
            if names_all(line, case.names):
                return ACCEPTED_WITH_NOTE, line
    return SILENT, ""


def classify_call(case: Case, call: Callable[[], Any]) -> tuple[str, str]:
    """(outcome, message) of an API call."""
    from finetune_kit.cli import _user_errors

    try:
        call()
    except _user_errors() as exc:
        message = f"{type(exc).__name__}: {exc}"
        one_line = "\n" not in str(exc).strip() and names_all(str(exc), case.names)
        return (ONE_LINE_ERROR if one_line else WRONG_ERROR), message
    except Exception as exc:  # noqa: BLE001 - what escapes is what the catalog records
        return TRACEBACK, f"{type(exc).__name__}: {exc}"
    return SILENT, ""


QUIET_OPTIONS = {("--epochs", "1"), ("--batch-size", "8"), ("--bootstrap-resamples", "0"), ("--max-steps", "1")}
QUIET_FLAGS = {"--no-report-plots", "--no-plots", "--no-progress"}


def command_shape(setup: Setup, ws: Workspace, here: Path) -> str:
    """The command as the table shows it: paths relative to the case, the quick-run options left out."""
    if setup.call is not None:
        return setup.call_shape
    args, shown = list(setup.args), []
    while args:
        if tuple(args[:2]) in QUIET_OPTIONS:
            del args[:2]
        elif args[0] in QUIET_FLAGS:
            del args[0]
        else:
            shown.append(args.pop(0))
    return relative(" ".join(shown), ws, here)


def relative(text: str, ws: Workspace, here: Path) -> str:
    """``text`` with the paths of the catalog run made relative to the case (or the workspace)."""
    text = text.replace(ws.encoder, "tiny-bert")
    return text.replace(f"{here}/", "").replace(f"{ws.root}/", "")


def run_case(case: Case, ws: Workspace, here: Path) -> Outcome:
    """Build the case's inputs in ``here``, run it and classify what it did."""
    here.mkdir(parents=True, exist_ok=True)
    try:
        setup = case.build(ws, here)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not raised
        return Outcome(case, "", "-", NOT_BUILT, f"{type(exc).__name__}: {exc}")
    before = {path: fingerprint(path) for path in setup.watched}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if setup.call is not None:
            exit_status = "-"
            kind, message = classify_call(case, setup.call)
        else:
            from typer.testing import CliRunner

            from finetune_kit.cli import app

            result = CliRunner().invoke(app, list(setup.args))
            exit_status = str(result.exit_code)
            kind, message = classify_exit(case, result.exit_code, result.exception, result.stderr,
                                          [str(w.message) for w in caught])
    wrote = tuple(path.name for path in setup.watched if fingerprint(path) != before[path])
    return Outcome(case, command_shape(setup, ws, here), exit_status, kind, relative(message, ws, here), wrote,
                   through_api=setup.call is not None)


# -- the table ------------------------------------------------------------------------------------

def cell(text: str, width: int | None = None) -> str:
    text = " ".join(text.split())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text.replace("|", "\\|")


def markdown_report(outcomes: list[Outcome]) -> str:
    """The table of every case and the counts per outcome."""
    lines = ["| case | command | exit | outcome | expected | message |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        outcome = o.kind + (f", wrote files ({', '.join(o.wrote)})" if o.wrote else "")
        expected = "yes" if o.as_expected else f"no: {o.case.expected}"
        lines.append(f"| {o.case.id} | `{cell(o.command)}` | {o.exit_status} | {outcome} | {expected} | "
                     f"{cell(o.message, MESSAGE_WIDTH)} |")
    counts = Counter(o.kind for o in outcomes)
    lines += ["", f"{len(outcomes)} cases ({sum(o.through_api for o in outcomes)} through the Python API):"]
    lines += [f"- {kind}: {counts[kind]}" for kind in OUTCOMES if counts[kind]]
    lines.append(f"- wrote files: {sum(bool(o.wrote) for o in outcomes)}")
    lines.append(f"- as expected: {sum(o.as_expected for o in outcomes)} of {len(outcomes)}")
    return "\n".join(lines)


def main() -> None:
    import finetune_kit
    import finetune_kit_tasks

    print(f"Code under test: {Path(finetune_kit.__file__).parent}, {Path(finetune_kit_tasks.__file__).parent}",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as tmp:
        ws = Workspace(Path(tmp))
        outcomes = []
        for case_ in CASES:
            outcomes.append(run_case(case_, ws, Path(tmp) / "cases" / case_.id))
            print(f"{case_.id}: {outcomes[-1].kind}", file=sys.stderr)
    print(markdown_report(outcomes))


if __name__ == "__main__":
    main()
