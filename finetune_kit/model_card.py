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
from .hub import is_repo_id
from .modeling import resolve_model_path
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


def yaml_header(manifest: Any, pipeline_tag: str | None, data: list[dict[str, Any]],
                results: dict[str, list[dict[str, Any]]], model_name: str) -> dict[str, Any]:
    """The card's front matter in the Hub's model-card schema (what ``huggingface_hub.ModelCard``
    reads): library, pipeline tag (the task's ``pipeline_tag``), base model and datasets where they
    are Hub ids, license where the base model's card gives one, the metric names, tags and a
    ``model-index`` with the results of the test split (else the validation split)."""
    config = manifest.config
    header: dict[str, Any] = {"library_name": library_name(manifest)}
    if pipeline_tag is not None:
        header["pipeline_tag"] = pipeline_tag
    base_model = hub_base_model(manifest.base_model)
    if base_model is not None:
        header["base_model"] = base_model
    licence = base_model_license(manifest.base_model)
    if licence is not None:
        header["license"] = licence
    if config.get("dataset"):
        header["datasets"] = [config["dataset"]]
    keys = list(dict.fromkeys(row["key"] for rows in results.values() for row in rows))
    if keys:
        header["metrics"] = keys
    header["tags"] = ["finetune-kit", manifest.task]
    result = model_index_result(manifest, pipeline_tag, data, results)
    if result is not None:
        header["model-index"] = [{"name": model_name, "results": [result]}]
    return header


def library_name(manifest: Any) -> str:
    """transformers for a directory transformers loads as it is, peft for a LoRA adapter over a
    transformers task model, finetune-kit for a model with finetune-kit's own head."""
    if manifest.transformers_class is None:
        return "finetune-kit"
    return "peft" if manifest.config.get("lora") else "transformers"


def hub_base_model(base_model: str) -> str | None:
    """The base model's Hub id, or None when it was a local path (a folder on the training machine)."""
    if Path(base_model).expanduser().exists() or not is_repo_id(base_model):
        return None
    return base_model


def base_model_license(base_model: str) -> str | None:
    """The license in the base model's own card, when that card is on disk (a local folder, the
    packaged encoder, or the Hub cache); None when it is not known."""
    from huggingface_hub import try_to_load_from_cache

    folder = Path(resolve_model_path(base_model))
    card: Any = folder / MODEL_CARD if folder.is_dir() else None
    if card is None and is_repo_id(base_model):
        card = try_to_load_from_cache(base_model, MODEL_CARD)
    if not isinstance(card, (str, Path)) or not Path(card).is_file():
        return None
    try:
        licence = read_front_matter(Path(card).read_text(encoding="utf-8")).get("license")
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    return licence if isinstance(licence, str) and licence else None


def model_index_result(manifest: Any, pipeline_tag: str | None, data: list[dict[str, Any]],
                       results: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The model-index entry: the test split's headline metrics, else the validation split's."""
    split = next((s for s in ("test", "validation") if results.get(s)), None)
    if split is None:
        return None
    metrics = [{"type": row["key"], "value": round(float(row["value"]), 4), "name": row["metric"]}
               for row in results[split] if isinstance(row["value"], (int, float))]
    if not metrics:
        return None
    return {"task": {"type": pipeline_tag or manifest.task, "name": manifest.task},
            "dataset": result_dataset(manifest.config, data, split), "metrics": metrics}


def result_dataset(config: dict[str, Any], data: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """The data a result was measured on: the Hub dataset (id, configuration, split) or the file."""
    if config.get("dataset"):
        dataset = {"name": config["dataset"], "type": config["dataset"]}
        if config.get("dataset_config"):
            dataset["config"] = config["dataset_config"]
        return {**dataset, "split": config.get(f"{split}_split") or split}
    entry = next((e for e in data if e["split"] == split), {})
    name = str(entry.get("file") or Path(str(entry.get("source", split))).name)
    return {"name": name, "type": name, "split": split}


def python_string(text: str) -> str:
    """``text`` as a Python string literal (escapes included, so a code block cannot be broken out of)."""
    return json.dumps(text, ensure_ascii=False)


def loading_section(task: str, is_adapter: bool, model_dir: str, runs_code: bool = False,
                    transformers_class: str | None = None, pipeline_tag: str | None = None,
                    base_model: str | None = None) -> list[str]:
    """How to load the model: with finetune_kit always, and, for a directory transformers reads
    (``transformers_class``), with transformers (or peft over the base model, for LoRA).
    ``runs_code``: the encoder's code ships with it, which only runs when the user trusts it."""
    trust = ", trust_remote_code=True" if runs_code else ""
    lines = ["## How to load it", "", "With finetune-kit (the task head, label maps and tuned thresholds included):",
             "```python", "import finetune_kit as fk", "",
             f"model = fk.load({python_string(model_dir)}{trust})  # this directory, or the model's Hub id",
             "model.predict([...])  # inputs as the task reads them", "```", ""]
    if runs_code:
        lines += ["The encoder's architecture is Python code shipped with the model: it runs only when loading is "
                  "given `trust_remote_code=True` (`--trust-remote-code` on the command line); give it only for a "
                  "model whose source you trust.", ""]
    if transformers_class is None:
        return lines + finetune_kit_only(is_adapter, model_dir)
    if is_adapter:
        return lines + peft_loading(transformers_class, model_dir, base_model or "BASE_MODEL", trust)
    return lines + transformers_loading(transformers_class, pipeline_tag, model_dir, trust)


def auto_class(transformers_class: str) -> str:
    """The transformers Auto class that builds ``transformers_class`` (BertForTokenClassification ->
    AutoModelForTokenClassification), or the class itself when there is none."""
    import transformers

    if "For" not in transformers_class:
        return transformers_class
    auto = "AutoModel" + transformers_class[transformers_class.index("For"):]
    return auto if hasattr(transformers, auto) else transformers_class


def has_pipeline(pipeline_tag: str | None) -> bool:
    """Whether transformers has a ``pipeline()`` for the tag: the Hub knows task tags (multiple-choice)
    that no pipeline implements."""
    from transformers.pipelines import SUPPORTED_TASKS

    return pipeline_tag in SUPPORTED_TASKS


def transformers_loading(transformers_class: str, pipeline_tag: str | None, model_dir: str, trust: str) -> list[str]:
    auto = auto_class(transformers_class)
    pipeline_tag = pipeline_tag if has_pipeline(pipeline_tag) else None
    code = ["```python", f"from transformers import AutoTokenizer, {auto}" + (", pipeline" if pipeline_tag else ""),
            "", f"directory = {python_string(model_dir)}  # or the model's Hub id",
            f"model = {auto}.from_pretrained(directory{trust})", "tokenizer = AutoTokenizer.from_pretrained(directory)"]
    if pipeline_tag:
        code.append(f"predict = pipeline({python_string(pipeline_tag)}, model=directory{trust})")
    return [f"With plain transformers: the directory is a transformers model (`{transformers_class}`, its "
            "configuration in config.json), which loads as it is:", "", *code, "```"]


def peft_loading(transformers_class: str, model_dir: str, base_model: str, trust: str) -> list[str]:
    auto = auto_class(transformers_class)
    return [f"With peft and transformers: the directory holds a LoRA adapter in peft's layout over "
            f"`{transformers_class}` built from the base model (config.json gives its labels):", "", "```python",
            "from peft import PeftModel", f"from transformers import AutoConfig, AutoTokenizer, {auto}", "",
            f"directory = {python_string(model_dir)}  # or the model's Hub id",
            f"base = {auto}.from_pretrained({python_string(base_model)}, "
            f"config=AutoConfig.from_pretrained(directory{trust}){trust})",
            "model = PeftModel.from_pretrained(base, directory)",
            "tokenizer = AutoTokenizer.from_pretrained(directory)", "```", "",
            f"{markdown_code(f'finetune-kit export {shlex.quote(model_dir)} --merge --output MERGED')} writes it "
            "merged, as a full model."]


def finetune_kit_only(is_adapter: bool, model_dir: str) -> list[str]:
    lines = ["This is a finetune-kit model: its task head is finetune-kit's own module, not a transformers class, so "
             "`finetune_kit.load` (or `finetune-kit predict`) is what loads it; transformers' `AutoModelFor...` and "
             "`pipeline()` do not."]
    if is_adapter:
        lines += ["", "The directory holds a LoRA adapter and the task head, not full weights: `fk.load` builds the "
                  "base encoder named above and applies them; "
                  f"{markdown_code(f'finetune-kit export {shlex.quote(model_dir)} --merge --output MERGED')} writes a "
                  "full model."]
    lines += ["", "The fine-tuned encoder alone, without the head, as a plain transformers model (`AutoModel`): "
              f"{markdown_code(f'finetune-kit export {shlex.quote(model_dir)} --encoder --output ENCODER')}."]
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


def model_kind(manifest: Any, pipeline_tag: str | None = None) -> str:
    """One sentence: which kind of model the directory holds, so which libraries load it."""
    cls = manifest.transformers_class
    if cls is None:
        return ("It is a finetune-kit model (the encoder with finetune-kit's own task head): it loads with "
                "`finetune_kit.load`.")
    if manifest.config.get("lora"):
        return (f"It is a LoRA adapter in peft's layout over a transformers `{cls}`: it loads with peft's "
                "`PeftModel.from_pretrained` over the base model, and with `finetune_kit.load`.")
    pipeline = " and `pipeline()`" if has_pipeline(pipeline_tag) else ""
    return (f"It is a transformers model (`{cls}`): it loads with `{auto_class(cls)}.from_pretrained`{pipeline}, "
            "and with `finetune_kit.load`.")


def render_model_card(manifest: Any, data: list[dict[str, Any]], report: dict[str, Any], model_dir: str,
                      metrics: dict[str, Any], train_summary: dict[str, Any] | None) -> str:
    config = manifest.config
    task = manifest.task
    results = headline_results(report)
    pipeline_tag = get_task_class(task).pipeline_tag
    header = yaml_header(manifest, pipeline_tag, data, results, Path(model_dir).name or "model")
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {markdown_text(Path(model_dir).name or 'model')}: {task}", "",
             f"A `{task}` model fine-tuned with finetune-kit from {markdown_code(manifest.base_model)}. "
             + model_kind(manifest, pipeline_tag)]
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
    lines += ["", *loading_section(task, bool(config.get("lora")), model_dir, bool(config.get("trust_remote_code")),
                                   manifest.transformers_class, pipeline_tag, manifest.base_model), ""]
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
