"""Train a question-answering model briefly (the default, transformers head), then answer the
evaluation questions with finetune-kit's ``predict`` and with transformers' question-answering
pipeline on the saved directory, and print the share of identical answers and the cases that
differ.

Data: SQuAD v1.1 dev split by article as in ``qa_vs_trainer.py`` (articles 1-38 to train on,
39-48 to answer), cut to the first questions. The pipeline gets the task's settings:
``max_seq_len`` (max_length), ``doc_stride``, ``max_answer_len``, ``max_question_len``, and
``align_to_words=False`` (our answers are the characters of their first to last token, not
widened to whole words).

transformers 5 removed the question-answering pipeline; with such a transformers installed,
``--pipeline-python`` names an interpreter with transformers 4.x (and torch), which runs the
pipeline in a child process (``--child`` is that child's entry point).

    python benchmarks/pipeline_equivalence.py --max-steps 150 --max-eval-questions 300 \\
        --pipeline-python /path/to/transformers4/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_run_arguments, machine, offline, packaged_encoder, work_directory

SHOWN = 15  # differing answers printed


def squad_questions(path: Path) -> list[dict]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [{"id": qa["id"], "question": qa["question"], "context": paragraph["context"]}
            for article in document["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


# -- the pipeline side (in this process, or in a child with another transformers) ----------------
def pipeline_answers(model_dir: str, questions: list[dict], settings: dict) -> list[dict]:
    from transformers import pipeline

    qa = pipeline("question-answering", model=model_dir, device="cpu")
    answers = []
    for item in questions:
        out = qa(question=item["question"], context=item["context"], **settings)
        answers.append({"answer": out["answer"], "score": float(out["score"]), "start": out["start"]})
    return answers


def child(request_path: str, answers_path: str) -> None:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    answers = pipeline_answers(request["model_dir"], request["questions"], request["settings"])
    Path(answers_path).write_text(json.dumps(answers), encoding="utf-8")


def has_qa_pipeline() -> bool:
    from transformers.pipelines import SUPPORTED_TASKS

    return "question-answering" in SUPPORTED_TASKS


def run_pipeline(model_dir: Path, questions: list[dict], settings: dict, python: str | None, work: Path) -> list[dict]:
    if has_qa_pipeline():
        return pipeline_answers(str(model_dir), questions, settings)
    if not python:
        sys.exit("this transformers has no question-answering pipeline; give --pipeline-python (transformers 4.x)")
    request, answers = work / "pipeline_request.json", work / "pipeline_answers.json"
    request.write_text(json.dumps({"model_dir": str(model_dir), "questions": questions, "settings": settings}),
                       encoding="utf-8")
    subprocess.run([python, __file__, "--child", str(request), str(answers)], check=True)
    return json.loads(answers.read_text(encoding="utf-8"))


# -- finetune-kit's side ---------------------------------------------------------------------
def train(model: str, train_file: Path, out: Path, ns: argparse.Namespace) -> None:
    import finetune_kit as fk

    fk.train(task="question-answering", model=model, train_file=str(train_file), output_dir=str(out),
             max_steps=ns.max_steps, batch_size=ns.batch_size, learning_rate=ns.learning_rate, max_length=ns.max_length,
             report_plots=False, bootstrap_resamples=0)


def windows_per_question(predictor, questions: list[dict]) -> list[int]:
    """How many windows each question's context is cut into (the pipeline and we agree on one)."""
    from datasets import Dataset

    from finetune_kit.inference import prepare_features

    raw = Dataset.from_list([{**q, "answers": {"text": [], "answer_start": []}} for q in questions])
    features = prepare_features(predictor.task, raw, "predict")
    counts = [0] * len(questions)
    for example in features["example_index"]:
        counts[example] += 1
    return counts


def compare(questions: list[dict], ours: list[dict], theirs: list[dict], windows: list[int]) -> None:
    same = [a["answer"] == b["answer"] for a, b in zip(ours, theirs)]
    single = [w == 1 for w in windows]
    print(f"identical answers: {sum(same)} of {len(same)} ({sum(same) / len(same):.2%})")
    for name, group in (("one window", single), ("several windows", [not s for s in single])):
        n = sum(group)
        if n:
            agree = sum(s for s, g in zip(same, group) if g)
            print(f"  questions with {name}: {agree} of {n} identical")
    differing = [i for i, s in enumerate(same) if not s]
    for i in differing[:SHOWN]:
        print(f"- {questions[i]['id']} ({windows[i]} windows) {questions[i]['question']!r}\n"
              f"    finetune-kit: {ours[i]['answer']!r} (score {ours[i]['score']:.3f})\n"
              f"    pipeline:     {theirs[i]['answer']!r} (score {theirs[i]['score']:.4f})")
    if len(differing) > SHOWN:
        print(f"... and {len(differing) - SHOWN} more")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--max-steps", type=int, default=150, help="training steps [150]")
    parser.add_argument("--max-train-questions", type=int, default=2400, help="[2400]")
    parser.add_argument("--max-eval-questions", type=int, default=300, help="[300]")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--pipeline-python", help="a Python with transformers 4.x, when this one has no QA pipeline")
    ns = parser.parse_args()
    offline()
    from qa_vs_trainer import split_squad

    import finetune_kit as fk

    work = work_directory(ns.work_dir, "pipeline-equivalence-")
    print(machine())
    train_file, eval_file = split_squad(work, ns.max_train_questions, ns.max_eval_questions)
    out = work / "model"
    train(ns.model or packaged_encoder(), train_file, out, ns)
    predictor = fk.load(out)
    questions = squad_questions(eval_file)
    ours = predictor.predict(questions)
    options = predictor.task.options
    settings = {"max_seq_len": predictor.task.settings.max_length, "doc_stride": options["doc_stride"],
                "max_answer_len": options["max_answer_length"], "max_question_len": options["max_query_length"],
                "handle_impossible_answer": predictor.task.with_negatives, "align_to_words": False}
    print(f"pipeline settings: {settings}")
    theirs = run_pipeline(out, questions, settings, ns.pipeline_python, work)
    compare(questions, ours, theirs, windows_per_question(predictor, questions))
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"ours": ours, "pipeline": theirs}, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
