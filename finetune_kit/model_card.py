"""The model card: ``README.md`` in a trained model directory, in the Hugging Face layout.

A YAML header (base model, task, datasets, metrics and a ``model-index`` with the results),
then sections on the encoder, the training data (files, sizes, sha256, label distribution),
the settings, the results with their bootstrap intervals, intended use and limitations, and
how to load the model. Everything in it comes from the run: nothing is claimed that the run
did not measure.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from .config import CARD_SETTINGS
from .files import atomic_write_text
from .modeling import WEIGHTS
from .registry import get_task_class
from .markdown import Markdown, interval_text, markdown_code, markdown_table, markdown_text

MODEL_CARD = "README.md"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_data(config: dict[str, Any], sources: dict[str, str], rows: dict[str, int],
                  label_counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One entry per split: where it came from (file with its size and sha256, or hub dataset),
    its number of examples and its label distribution."""
    files = {"train": config.get("train_file"), "validation": config.get("validation_file"),
             "test": config.get("test_file")}
    out = []
    for split, source in sources.items():
        entry: dict[str, Any] = {"split": split, "source": source, "examples": rows.get(split)}
        path = files.get(split)
        if path and Path(path).is_file() and (split != "validation" or not config.get("validation_fraction")):
            entry.update(file=Path(path).name, bytes=Path(path).stat().st_size, sha256=sha256_of(path))
        elif split == "validation" and config.get("validation_fraction") and files["train"] and \
                Path(files["train"]).is_file():
            entry.update(file=Path(files["train"]).name, note="held out from the training file")
        if split in label_counts:
            entry["labels"] = label_counts[split]
        out.append(entry)
    return out


def headline_results(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The headline metrics of each split of report.json (value, and interval where computed)."""
    return {split: part.get("headline", []) for split, part in report.get("splits", {}).items()}


def yaml_header(task: str, pipeline_tag: str | None, base_model: str, data: list[dict[str, Any]],
                results: dict[str, list[dict[str, Any]]], model_name: str) -> dict[str, Any]:
    """The card's front matter; ``pipeline_tag`` is the task's Hugging Face pipeline (``Task.pipeline_tag``)."""
    header: dict[str, Any] = {"library_name": "finetune-kit", "base_model": base_model,
                              "tags": ["finetune-kit", task]}
    if pipeline_tag is not None:
        header["pipeline_tag"] = pipeline_tag
    header["datasets"] = list(dict.fromkeys(entry.get("file") or entry["source"] for entry in data))
    keys = list(dict.fromkeys(row["key"] for rows in results.values() for row in rows))
    if keys:
        header["metrics"] = keys
    entries = []
    for split, rows in results.items():
        if not rows:
            continue
        source = next((e.get("file") or e["source"] for e in data if e["split"] == split), split)
        entries.append({"task": {"type": pipeline_tag or task, "name": task},
                        "dataset": {"name": str(source), "type": str(source), "split": split},
                        "metrics": [{"type": row["key"], "name": row["metric"], "value": round(float(row["value"]), 4)}
                                    for row in rows if isinstance(row["value"], (int, float))]})
    if entries:
        header["model-index"] = [{"name": model_name, "results": entries}]
    return header


def python_string(text: str) -> str:
    """``text`` as a Python string literal (escapes included, so a code block cannot be broken out of)."""
    return json.dumps(text, ensure_ascii=False)


def loading_section(task: str, is_adapter: bool, model_dir: str, runs_code: bool = False) -> list[str]:
    """How to load the model, with finetune_kit and, where it really works, plain transformers.
    ``runs_code``: the encoder's code ships with it, which only runs when the user trusts it."""
    trust = ", trust_remote_code=True" if runs_code else ""
    lines = ["## How to load it", "", "With finetune-kit (the task head, label maps and tuned thresholds included):",
             "```python", "import finetune_kit as fk", "", f"model = fk.load({python_string(model_dir)}{trust})",
             "model.predict([...])  # inputs as the task reads them", "```", ""]
    if runs_code:
        lines += ["The encoder's architecture is Python code shipped with the model: it runs only when loading is "
                  "given `trust_remote_code=True` (`--trust-remote-code` on the command line); give it only for a "
                  "model whose source you trust.", ""]
    if is_adapter:
        lines += ["The directory holds a LoRA adapter and the task head, not full weights: `fk.load` builds the base "
                  "encoder named above and applies them. Plain transformers cannot load it as it is; "
                  f"{markdown_code(f'finetune-kit export {shlex.quote(model_dir)} --merge --output MERGED')} writes a "
                  "full model first."]
        return lines
    lines += [
        f"With plain transformers: `{WEIGHTS}` holds the encoder's weights under the prefix `encoder.` beside the "
        "head's, which is finetune-kit's own module, so `AutoModel.from_pretrained` on the directory does not "
        "find the encoder weights. The fine-tuned encoder (without the head) loads like this:",
        "",
        "```python",
        "from safetensors.torch import load_file",
        "from transformers import AutoConfig, AutoModel, AutoTokenizer",
        "",
        f"directory = {python_string(model_dir)}",
        "tokenizer = AutoTokenizer.from_pretrained(directory)",
        "encoder = AutoModel.from_config(AutoConfig.from_pretrained(directory))",
        f'weights = load_file(f"{{directory}}/{WEIGHTS}")',
        'state = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}',
        "missing, unexpected = encoder.load_state_dict(state, strict=False)",
        'assert not unexpected and all(k.startswith("pooler.") for k in missing)  # the pooler may be unused',
        "encoder.eval()",
        "```",
        "",
        "The task head is not a transformers class; for predictions use finetune-kit.",
    ]
    return lines


LIMITATIONS = (
    "A fine-tuned model reflects its data: the biases, gaps and annotation conventions of the training set "
    "(and of the text the pretrained encoder was trained on) carry over into its predictions, and it may "
    "perform worse, or unfairly, on text unlike that data (other domains, dialects, registers, time periods). "
    "The results above were measured on the evaluation data named here only; check the model on data from "
    "the setting where it will be used before relying on it, and do not use it for decisions about people "
    "without such checks and human review."
)


def setting_text(value: Any) -> str:
    """A setting as given (5e-05, not a rounded 0.0001)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_model_card(manifest: Any, data: list[dict[str, Any]], report: dict[str, Any], model_dir: str,
                      metrics: dict[str, Any], train_summary: dict[str, Any] | None) -> str:
    config = manifest.config
    task = manifest.task
    results = headline_results(report)
    header = yaml_header(task, get_task_class(task).pipeline_tag, manifest.base_model, data, results,
                         Path(model_dir).name or "model")
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {markdown_text(Path(model_dir).name or 'model')}: {task}", "",
             f"A `{task}` model fine-tuned with finetune-kit from {markdown_code(manifest.base_model)}."]
    lines += ["", "## Base encoder", "", f"{markdown_code(manifest.base_model)}, adapted by "
              + ("LoRA adapters (the task head trained fully)" if config.get("lora") else "full fine-tuning")
              + (f"; only the top {config['train_top_layers']} layer(s) trained"
                 if config.get("train_top_layers") is not None else "")
              + ("; embeddings frozen" if config.get("freeze_embeddings") else "") + "."]
    lines += ["", "## Training and evaluation data", "", markdown_table(
        ["split", "source", "examples", "bytes", "sha256"],
        [[e["split"], e.get("file", e["source"]), e.get("examples", ""), e.get("bytes", ""),
          Markdown(f"`{e['sha256']}`") if "sha256" in e else e.get("note", "")] for e in data])]
    for entry in data:
        if entry.get("labels"):
            lines += ["", f"Label distribution, {entry['split']}:", "",
                      markdown_table(["label", "count"], [[k, v] for k, v in entry["labels"].items()])]
    params = [[k, setting_text(config[k])] for k in CARD_SETTINGS if k in config and config[k] not in (None, {}, [])]
    lines += ["", "## Hyper-parameters", "", markdown_table(["setting", "value"], params)]
    if train_summary:
        summary = [[k.replace("_", " "), train_summary[k]] for k in ("step", "epoch", "train_runtime_s",
                                                                      "best_step", "metric_for_best", "best_metric")
                   if train_summary.get(k) is not None]
        lines += ["", "Training run:", "", markdown_table(["", "value"], summary)]
    lines += ["", "## Results"]
    for split, rows in results.items():
        if rows:
            source = next((e.get("file") or e["source"] for e in data if e["split"] == split), split)
            lines += ["", f"{split} ({markdown_text(source)}):", "",
                      markdown_table(["metric", "value", "95% CI"], [[r["metric"], r["value"], interval_text(r)]
                                                                     for r in rows])]
        elif split in metrics:
            lines += ["", f"{split}: see metrics.json."]
    intervals = next((p["intervals"] for p in report.get("splits", {}).values() if p.get("intervals")), None)
    if intervals:
        lines += ["", f"Intervals: {intervals['method']} ({intervals['resamples']} resamples of the "
                  f"{intervals['resampling_unit']}s, seed {intervals['seed']}). All figures: `metrics.json`, "
                  "`report.html`."]
    lines += ["", "## Intended use and limitations", "",
              f"For `{task}` on text like the training data described above.", "", LIMITATIONS]
    lines += ["", *loading_section(task, bool(config.get("lora")), model_dir,
                                   bool(config.get("trust_remote_code"))), ""]
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, manifest: Any, data: list[dict[str, Any]], report: dict[str, Any],
                     metrics: dict[str, Any], train_summary: dict[str, Any] | None = None) -> Path:
    path = Path(model_dir) / MODEL_CARD
    atomic_write_text(path, render_model_card(manifest, data, report, str(model_dir), metrics, train_summary))
    return path


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML header of a model card."""
    if not text.startswith("---\n"):
        return {}
    end = text.index("\n---", 4)
    return yaml.safe_load(text[4:end]) or {}
